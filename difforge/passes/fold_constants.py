"""Constant folding and dead-code removal (onnxscript's optimizer), leaving functions alone:
inlining them is a pass of its own that each engine chooses."""

from __future__ import annotations

from typing import Any

import onnx_ir as ir

from difforge.passes import register_pass
from difforge.passes.base import GraphPass


@register_pass
class FoldConstants(GraphPass):
    name = "fold_constants"
    summary = "fold constant subgraphs, drop unused nodes and initializers (onnxscript optimizer)"

    def run(self, model: ir.Model) -> dict[str, Any]:
        import onnxscript.optimizer

        nodes = sum(1 for _ in model.graph.all_nodes())
        onnxscript.optimizer.optimize(model, num_iterations=2, inline=False)
        return {"nodes_removed": nodes - sum(1 for _ in model.graph.all_nodes())}
