"""ONNX export of the difforge custom ops (needs onnx + onnxscript; not for the GPU runtime).

For the exporter::

    from difforge.plugins.onnx_ops import CUSTOM_TRANSLATION_TABLE, attach_fallback_functions

    program = torch.onnx.export(model, args, dynamo=True,
                                custom_translation_table=CUSTOM_TRANSLATION_TABLE, ...)
    model_proto = attach_fallback_functions(program.model_proto)

Importing this module registers the torch ops and the ONNX schemas (once per process).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import onnx
import torch
from onnx import FunctionProto, ModelProto, helper

import difforge.plugins.ops  # noqa: F401  (registers torch.ops.difforge.*)
from difforge.errors import DifforgeError
from difforge.plugins.onnx_ops import depthwise_conv, local_attention

DOMAIN = "difforge"
_OPS = {
    local_attention.NAME: local_attention,
    depthwise_conv.NAME: depthwise_conv,
}


def op_names() -> list[str]:
    """Every difforge custom op, as ``domain::Name``."""
    return sorted(f"{DOMAIN}::{name}" for name in _OPS)


def register_schemas() -> None:
    """Register the ONNX schemas with ``onnx.defs`` (idempotent)."""
    for module in _OPS.values():
        if not onnx.defs.has(module.NAME, module.DOMAIN):
            onnx.defs.register_schema(module.make_schema())


register_schemas()

CUSTOM_TRANSLATION_TABLE: dict[Any, Callable[..., Any]] = {
    torch.ops.difforge.local_attention_2d.default: local_attention.translate_local_attention_2d,
    torch.ops.difforge.depthwise_conv2d.default: depthwise_conv.translate_depthwise_conv2d,
}


def onnx_export_kwargs() -> dict[str, Any]:
    """Keyword arguments to merge into ``torch.onnx.export(..., dynamo=True)``."""
    return {"custom_translation_table": dict(CUSTOM_TRANSLATION_TABLE)}


def _default_opset(model: ModelProto) -> int:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return int(opset.version)
    raise DifforgeError("the ONNX model imports no default-domain opset")


def _used_ops(model: ModelProto) -> set[str]:
    used: set[str] = set()
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            if node.domain == DOMAIN:
                used.add(node.op_type)
            for attr in node.attribute:
                graphs.extend([attr.g] if attr.HasField("g") else list(attr.graphs))
    for function in model.functions:
        used.update(n.op_type for n in function.node if n.domain == DOMAIN)
    return used


def fallback_functions(opset: int, names: set[str] | None = None) -> list[FunctionProto]:
    """The standard-op ``FunctionProto`` bodies of the difforge ops, built for ``opset``."""
    chosen = sorted(_OPS if names is None else names & set(_OPS))
    return [_OPS[name].fallback_function(opset) for name in chosen]


def attach_fallback_functions(model: ModelProto) -> ModelProto:
    """Add a model-local function for every difforge op the model uses (in place, returned).

    The functions import the model's default-domain opset, as ``onnx.checker`` requires;
    plain ONNX Runtime then runs the difforge nodes with standard ops.
    """
    used = _used_ops(model)
    unknown = used - set(_OPS)
    if unknown:
        raise DifforgeError(f"the model uses difforge ops with no fallback: {sorted(unknown)}")
    have = {(f.domain, f.name) for f in model.functions}
    opset = _default_opset(model)
    for function in fallback_functions(opset, used):
        if (function.domain, function.name) not in have:
            model.functions.append(function)
    if used and not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return model


__all__ = [
    "CUSTOM_TRANSLATION_TABLE",
    "attach_fallback_functions",
    "fallback_functions",
    "onnx_export_kwargs",
    "register_schemas",
]
