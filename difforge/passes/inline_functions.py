"""Inline model-local functions into the graph, except those of domains kept as plugin nodes.

difforge's custom ops (``difforge::LocalAttention2D``, ``difforge::DepthwiseConv2D``) reach an
engine as a node plus a model-local function holding its standard-op body. An engine with a
plugin for the op keeps the node (``keep=("difforge",)``) and the body stays beside it as the
fallback; an engine without one inlines the body (ONNX Runtime's CPU build does by default).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import onnx_ir as ir
import onnx_ir.passes.common

from difforge.passes import register_pass
from difforge.passes.base import GraphPass, domains, keep_domains_criteria


@register_pass
class InlineFunctions(GraphPass):
    name = "inline_functions"
    summary = "inline model-local functions (custom-op bodies) except the domains kept"

    def __init__(self, keep: str | Iterable[str] = ()) -> None:
        super().__init__()
        self.keep = domains(keep)

    def run(self, model: ir.Model) -> dict[str, Any]:
        before = {f"{d}::{n}" for (d, n, _) in model.functions}
        onnx_ir.passes.common.InlinePass(keep_domains_criteria(self.keep))(model)
        after = {f"{d}::{n}" for (d, n, _) in model.functions}
        return {"inlined": sorted(before - after), "kept": sorted(after)}
