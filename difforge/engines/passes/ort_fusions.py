"""Fuse attention and normalisation into ONNX Runtime's CPU contrib ops.

ONNX Runtime's own transformer optimizer finds nothing to fuse in a dynamo-exported graph and
its U-Net options emit CUDA-only ops; onnxscript's ``optimize_for_ort`` matches the dynamo
patterns and emits ``com.microsoft`` ops the CPU provider runs (MultiHeadAttention,
SkipLayerNormalization, ...). The builder checks the result numerically against the input.
"""

from __future__ import annotations

import onnx_ir as ir
import onnx_ir.passes


class OrtTransformerFusions(onnx_ir.passes.InPlacePass):
    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def call(self, model: ir.Model) -> onnx_ir.passes.PassResult:
        from onnxscript.rewriter.ort_fusions import optimize_for_ort

        _, counts = optimize_for_ort(model)
        self.counts = {k: int(v) for k, v in counts.items() if v}
        return onnx_ir.passes.PassResult(model, modified=bool(self.counts))
