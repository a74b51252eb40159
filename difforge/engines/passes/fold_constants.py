"""Constant folding and dead-code removal with onnxscript's optimizer."""

from __future__ import annotations

import onnx_ir as ir
import onnx_ir.passes

from difforge.engines.passes.fingerprint import fingerprint


class FoldConstants(onnx_ir.passes.InPlacePass):
    """Fold constant subgraphs, inline functions, drop unused nodes (onnxscript.optimizer)."""

    def call(self, model: ir.Model) -> onnx_ir.passes.PassResult:
        import onnxscript.optimizer

        before = fingerprint(model)
        onnxscript.optimizer.optimize(model, num_iterations=2)
        return onnx_ir.passes.PassResult(model, modified=fingerprint(model) != before)
