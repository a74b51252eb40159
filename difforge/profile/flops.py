"""Count the denoiser's multiply-add work from its graph at concrete input shapes.

Only the ops that dominate a diffusion model's arithmetic are counted (Conv, MatMul, Gemm and
the attention contrib ops); elementwise and normalisation ops are memory-bound and left out,
which is what a roofline against the matmul peak wants. Shapes come from ONNX Runtime's
symbolic shape inference, which knows the ``com.microsoft`` fused ops the builder emits.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from difforge.artifact.dims import shape_of
from difforge.artifact.manifest import ComponentEntry

COUNTED = ("Conv", "FusedConv", "MatMul", "FusedMatMul", "Gemm", "MultiHeadAttention", "Attention")


@dataclass
class FlopCount:
    total: float = 0.0
    by_op: dict[str, float] = field(default_factory=dict)
    #: counted-type nodes whose shapes were unknown (their FLOPs are missing from ``total``).
    unresolved: int = 0

    def add(self, op: str, flops: float) -> None:
        self.total += flops
        self.by_op[op] = self.by_op.get(op, 0.0) + flops


#: initializers up to this many bytes are read from external data for shape inference
SMALL_INITIALIZER = 1 << 16


def _external_length(init: Any) -> int:
    info = {entry.key: entry.value for entry in init.external_data}
    return int(info.get("length", 1 << 62))


def _static_model(path: Path, inputs: dict[str, list[int]]) -> Any:
    """The graph with its inputs fixed to the shapes in ``inputs``, all shapes inferred."""
    import onnx
    # ONNX Runtime's symbolic shape inference needs sympy and says so in a bare ImportError;
    # importing it first names the missing package (the CLI turns that into its extra).
    importlib.import_module("sympy")
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.load(str(path), load_external_data=False)
    # Shape inference reads the values of small initializers (shapes, axes); a graph with
    # external data may keep those beside its weights: read them, never the weights.
    for init in model.graph.initializer:
        if uses_external_data(init) and _external_length(init) <= SMALL_INITIALIZER:
            load_external_data_for_tensor(init, str(path.parent))
    for value in model.graph.input:
        if value.name not in inputs:
            raise KeyError(f"no shape given for input {value.name!r}")
        dims = value.type.tensor_type.shape.dim
        for dim, size in zip(dims, inputs[value.name], strict=True):
            dim.ClearField("dim_param")
            dim.dim_value = int(size)
    del model.graph.value_info[:]
    return SymbolicShapeInference.infer_shapes(model, auto_merge=True, guess_output_rank=True)


def _shapes(model: Any) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    values = [*model.graph.input, *model.graph.output, *model.graph.value_info]
    for value in values:
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            out[value.name] = [int(d.dim_value) for d in dims]
    for init in model.graph.initializer:
        out[init.name] = [int(d) for d in init.dims]
    return out


def _attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def node_flops(node: Any, shapes: dict[str, list[int]]) -> float | None:
    """FLOPs (2 per multiply-add) of one node, or ``None`` if its shapes are unknown."""
    op = node.op_type
    ins = [shapes.get(name) if name else None for name in node.input]
    outs = [shapes.get(name) for name in node.output]
    if op in ("Conv", "FusedConv"):
        w, y = ins[1] if len(ins) > 1 else None, outs[0]
        if w is None or y is None:
            return None
        # y: (N, Cout, *spatial); w: (Cout, Cin/group, *kernel)
        return 2.0 * math.prod(y) * math.prod(w[1:])
    if op in ("MatMul", "FusedMatMul"):
        a, y = ins[0], outs[0]
        if a is None or y is None:
            return None
        return 2.0 * math.prod(y) * a[-1]
    if op == "Gemm":
        a, y = ins[0], outs[0]
        if a is None or y is None:
            return None
        k = a[0] if _attr(node, "transA", 0) else a[-1]
        return 2.0 * math.prod(y) * k
    if op == "MultiHeadAttention":
        return _mha_flops(node, ins)
    if op == "Attention":  # com.microsoft Attention: packed QKV projection + attention
        x, w = ins[0], ins[1] if len(ins) > 1 else None
        if x is None or w is None:
            return None
        b, s, d_in = x
        hidden = w[1] // 3
        return 2.0 * b * s * d_in * w[1] + 4.0 * b * s * s * hidden
    return None


def _mha_flops(node: Any, ins: list[list[int] | None]) -> float | None:
    heads = int(_attr(node, "num_heads", 1))
    q = ins[0]
    k = ins[1] if len(ins) > 1 else None
    if q is None:
        return None
    if len(q) == 5:  # packed QKV: (B, S, N, 3, H)
        b, s, _, _, h = q
        return 4.0 * b * s * s * heads * h
    if k is None:
        return None
    b, s, hidden = q
    # (B, L, hidden) or packed KV (B, L, N, 2, H): L is dim 1; (B, N, L, H) is split by head
    kv_len = k[1] if len(k) in (3, 5) else k[2]
    # QK^T and (softmax · V): two (S × L × hidden) products.
    return 4.0 * b * s * kv_len * hidden


def input_shapes(entry: ComponentEntry, sizes: dict[str, int]) -> dict[str, list[int]]:
    """Concrete input shapes of a manifest component with its axes set to ``sizes``."""
    return {t.name: shape_of(t.shape, sizes) for t in entry.inputs}


def count_flops(path: Path, inputs: dict[str, list[int]]) -> FlopCount:
    """FLOPs of one call of the graph at ``path`` with its inputs of shapes ``inputs``."""
    model = _static_model(path, inputs)
    shapes = _shapes(model)
    result = FlopCount()
    for node in model.graph.node:
        if node.op_type not in COUNTED:
            continue
        flops = node_flops(node, shapes)
        if flops is None:
            result.unresolved += 1
        else:
            result.add(node.op_type, flops)
    return result
