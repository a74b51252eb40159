"""ONNX side of ``difforge::local_attention_2d``: the ``difforge::LocalAttention2D`` node.

Node: ``out = LocalAttention2D(q, k, v, hw)`` with ``hw`` = int64 ``[H, W]``. H and W travel
as an input because they are dynamic in an exported graph; the ``height`` / ``width``
attributes hold the export-time values, or -1 when those were symbolic. ``num_global`` /
``num_pooled`` likewise (-1: derive them from shapes, T = Nq - H*W and P = Nk - Nq).
``radius``, ``window`` and ``scale`` must be static. ``plugin_namespace`` / ``plugin_version``
are read by the TensorRT plugin.

The fallback ``FunctionProto`` lets plain ONNX Runtime run the node with standard ops. It is
linear in tokens: it builds each image query's neighbour index table from H and W at run
time (Range and arithmetic), padded to ``(2r+1)**2`` slots with a validity mask, and gathers.
"""

from __future__ import annotations

from typing import Any

import onnx_ir as ir
import onnxscript
from onnx import FunctionProto, TensorProto
from onnx.defs import OpSchema
from onnxscript.values import Opset

from difforge.errors import DifforgeError
from difforge.plugins.onnx_ops._function_builder import (
    ATTR_FLOAT,
    ATTR_INT,
    ATTR_STRING,
    INT64_MAX,
    FunctionBuilder,
)

DOMAIN = "difforge"
NAME = "LocalAttention2D"
VERSION = 1
PLUGIN_NAMESPACE = "difforge"
PLUGIN_VERSION = "1"
ATTRIBUTES = (
    "height",
    "width",
    "num_global",
    "radius",
    "window",
    "scale",
    "num_pooled",
    "plugin_namespace",
    "plugin_version",
)
# Equal on strings (to read the ``window`` attribute in the fallback) needs opset 19.
MIN_OPSET = 19

_A = OpSchema.AttrType
# Untyped handle: onnxscript's per-op stubs reject the exporter's symbolic values.
op: Any = onnxscript.opset18


def _infer(ctx: Any) -> None:
    # Output = q's type and shape.
    ctx.set_output_type(0, ctx.get_input_type(0))


def make_schema() -> OpSchema:
    """The ``difforge::LocalAttention2D`` v1 schema (so onnxscript can emit the node)."""
    schema = OpSchema(
        NAME,
        DOMAIN,
        VERSION,
        "2-D local attention over [T global | H*W image | P pooled] tokens (CLEAR/NATTEN).",
        inputs=[
            OpSchema.FormalParameter("q", "T", "[B, heads, T + H*W, d]"),
            OpSchema.FormalParameter("k", "T", "[B, heads, T + H*W + P, d]"),
            OpSchema.FormalParameter("v", "T", "[B, heads, T + H*W + P, d]"),
            OpSchema.FormalParameter("hw", "tensor(int64)", "[H, W] of the image grid"),
        ],
        outputs=[OpSchema.FormalParameter("out", "T", "shaped like q")],
        type_constraints=[
            ("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], "float tensors")
        ],
        attributes=[
            OpSchema.Attribute("height", _A.INT, "export-time H, -1 if dynamic"),
            OpSchema.Attribute("width", _A.INT, "export-time W, -1 if dynamic"),
            OpSchema.Attribute("num_global", _A.INT, "T, -1 if dynamic"),
            OpSchema.Attribute("radius", _A.INT, "window radius"),
            OpSchema.Attribute("window", _A.STRING, "'disc' or 'square'"),
            OpSchema.Attribute("scale", _A.FLOAT, "softmax scale, <= 0 for 1/sqrt(d)"),
            OpSchema.Attribute("num_pooled", _A.INT, "P, -1 if dynamic"),
            OpSchema.Attribute("plugin_namespace", _A.STRING, "TensorRT plugin namespace"),
            OpSchema.Attribute("plugin_version", _A.STRING, "TensorRT plugin version"),
        ],
    )
    schema.set_type_and_shape_inference_function(_infer)
    return schema


def _static_or(value: Any, what: str, allow_dynamic: bool) -> int | float | str:
    if isinstance(value, int | float | str):
        return value
    if allow_dynamic:
        return -1
    raise DifforgeError(f"local attention {what} must be a constant for ONNX export")


def _as_vec(value: Any) -> ir.Value:
    """An int or an int64 scalar value as a 1-element int64 tensor."""
    if isinstance(value, int):
        return op.Constant(value_ints=[value])
    return op.Reshape(value, op.Constant(value_ints=[1]))


def translate_local_attention_2d(
    q: ir.Value,
    k: ir.Value,
    v: ir.Value,
    height: int | ir.Value,
    width: int | ir.Value,
    num_global: int | ir.Value,
    radius: int,
    window: str,
    scale: float,
    num_pooled: int | ir.Value,
) -> ir.Value:
    """onnxscript translation for ``torch.ops.difforge.local_attention_2d.default``."""
    hw = op.Concat(_as_vec(height), _as_vec(width), axis=0)
    difforge = Opset(DOMAIN, VERSION)
    return difforge.LocalAttention2D(
        q,
        k,
        v,
        hw,
        height=_static_or(height, "height", True),
        width=_static_or(width, "width", True),
        num_global=_static_or(num_global, "num_global", True),
        radius=_static_or(radius, "radius", False),
        window=_static_or(window, "window", False),
        scale=float(_static_or(scale, "scale", False)),
        num_pooled=_static_or(num_pooled, "num_pooled", True),
        plugin_namespace=PLUGIN_NAMESPACE,
        plugin_version=PLUGIN_VERSION,
    )


def fallback_function(opset: int) -> FunctionProto:
    """Standard-op body of ``difforge::LocalAttention2D`` for a model at ``opset``."""
    if opset < MIN_OPSET:
        raise DifforgeError(
            f"LocalAttention2D's ONNX fallback needs opset >= {MIN_OPSET}, the model has {opset}"
        )
    f = FunctionBuilder("la")
    zero, one = f.int_(0), f.int_(1)
    qf = f.op("Cast", "q", to=TensorProto.FLOAT)
    kf = f.op("Cast", "k", to=TensorProto.FLOAT)
    vf = f.op("Cast", "v", to=TensorProto.FLOAT)
    shape_q = f.op("Shape", "q")
    n_q = f.op("Gather", shape_q, f.int_(2), axis=0)
    dim = f.op("Gather", shape_q, f.int_(3), axis=0)
    n_k = f.op("Gather", f.op("Shape", "k"), f.int_(2), axis=0)
    hh = f.op("Gather", "hw", zero, axis=0)
    ww = f.op("Gather", "hw", one, axis=0)
    n_img = f.op("Mul", hh, ww)
    t = f.op("Sub", n_q, n_img)  # global tokens
    t_img = f.op("Add", t, n_img)  # end of image tokens = start of pooled ones

    # Scale: the attribute if > 0, else 1/sqrt(d).
    sc = f.op_ref("Constant", [], {"value_float": ("scale", ATTR_FLOAT)})
    default_sc = f.op("Reciprocal", f.op("Sqrt", f.op("Cast", dim, to=TensorProto.FLOAT)))
    sc = f.op("Where", f.op("Greater", sc, f.float_(0.0)), sc, default_sc)

    r = f.op_ref("Constant", [], {"value_int": ("radius", ATTR_INT)})
    window = f.op_ref("Constant", [], {"value_string": ("window", ATTR_STRING)})
    is_disc = f.op("Equal", window, f.op("Constant", value_string="disc"))
    kernel = f.op("Add", f.op("Mul", r, f.int_(2)), one)  # K = 2r + 1 slots per axis
    j = f.op("Range", zero, kernel, one)

    pix = f.op("Range", zero, n_img, one)
    qy, qx = f.op("Div", pix, ww), f.op("Mod", pix, ww)

    def first_key(qc: str, length: str) -> str:
        # disc: q - r (slots outside the disc or the grid are masked below);
        # square: NATTEN's shifted start clamp(q - r, 0, max(L - K, 0)).
        shifted = f.op("Sub", qc, r)
        limit = f.op("Max", f.op("Sub", length, kernel), zero)
        square = f.op("Min", f.op("Max", shifted, zero), limit)
        return f.op("Where", is_disc, shifted, square)

    j_row = f.op("Unsqueeze", j, f.ints(0))
    ky = f.op("Add", f.op("Unsqueeze", first_key(qy, hh), f.ints(1)), j_row)  # [HW, K]
    kx = f.op("Add", f.op("Unsqueeze", first_key(qx, ww), f.ints(1)), j_row)
    ky3 = f.op("Unsqueeze", ky, f.ints(2))  # [HW, K, 1]
    kx3 = f.op("Unsqueeze", kx, f.ints(1))  # [HW, 1, K]
    in_y = f.op("And", f.op("GreaterOrEqual", ky3, zero), f.op("Less", ky3, hh))
    in_x = f.op("And", f.op("GreaterOrEqual", kx3, zero), f.op("Less", kx3, ww))
    dj = f.op("Sub", j, r)
    dj2 = f.op("Mul", dj, dj)
    dist2 = f.op("Add", f.op("Unsqueeze", dj2, f.ints(1)), f.op("Unsqueeze", dj2, f.ints(0)))
    in_disc = f.op("Less", dist2, f.op("Mul", r, r))  # strict, as CLEAR
    shape_ok = f.op("Or", f.op("Not", is_disc), in_disc)  # [K, K]
    valid = f.op("And", f.op("And", in_y, in_x), shape_ok)  # [HW, K, K]
    index = f.op("Add", f.op("Mul", ky3, ww), kx3)
    index = f.op("Where", valid, index, zero)
    slots = f.op("Mul", kernel, kernel)
    valid = f.op("Reshape", valid, f.op("Concat", f.vec(n_img), f.vec(slots), axis=0))
    index = f.op("Reshape", index, f.ints(-1))

    q_img = f.slice(qf, t, n_q, 2)
    k_img, v_img = f.slice(kf, t, t_img, 2), f.slice(vf, t, t_img, 2)
    k_glob, v_glob = f.slice(kf, zero, t, 2), f.slice(vf, zero, t, 2)
    k_pool, v_pool = f.slice(kf, t_img, n_k, 2), f.slice(vf, t_img, n_k, 2)

    # Gathered neighbours [B, heads, HW, M, d]: memory linear in HW.
    five = f.op("Concat", f.ints(0, 0), f.vec(n_img), f.vec(slots), f.vec(dim), axis=0)
    k_nb = f.op("Reshape", f.op("Gather", k_img, index, axis=2), five)
    v_nb = f.op("Reshape", f.op("Gather", v_img, index, axis=2), five)
    q5 = f.op("Unsqueeze", q_img, f.ints(3))
    local = f.op("ReduceSum", f.op("Mul", q5, k_nb), f.ints(4), keepdims=0)
    local = f.op("Where", valid, f.op("Mul", local, sc), f.float_(float("-inf")))
    perm = [0, 1, 3, 2]
    glob = f.op("Mul", f.op("MatMul", q_img, f.op("Transpose", k_glob, perm=perm)), sc)
    pool = f.op("Mul", f.op("MatMul", q_img, f.op("Transpose", k_pool, perm=perm)), sc)
    probs = f.op("Softmax", f.op("Concat", glob, local, pool, axis=3), axis=3)
    t_end = f.op("Add", t, slots)
    p_glob = f.slice(probs, zero, t, 3)
    p_loc = f.slice(probs, t, t_end, 3)
    p_pool = f.slice(probs, t_end, f.int_(INT64_MAX), 3)
    weighted = f.op("Mul", f.op("Unsqueeze", p_loc, f.ints(4)), v_nb)
    o_loc = f.op("ReduceSum", weighted, f.ints(3), keepdims=0)
    o_img = f.op("Add", f.op("MatMul", p_glob, v_glob), o_loc)
    o_img = f.op("Add", o_img, f.op("MatMul", p_pool, v_pool))

    # Global (text) queries: dense over global + image keys (T x (T+HW), linear in HW).
    q_txt = f.slice(qf, zero, t, 2)
    k_vis, v_vis = f.slice(kf, zero, t_img, 2), f.slice(vf, zero, t_img, 2)
    s_txt = f.op("Mul", f.op("MatMul", q_txt, f.op("Transpose", k_vis, perm=perm)), sc)
    o_txt = f.op("MatMul", f.op("Softmax", s_txt, axis=3), v_vis)
    f.op_to("out", "CastLike", f.op("Concat", o_txt, o_img, axis=2), "q")
    return f.function(
        DOMAIN,
        NAME,
        ["q", "k", "v", "hw"],
        ["out"],
        ATTRIBUTES,
        opset,
        "Standard-op fallback of difforge::LocalAttention2D (linear-memory gather).",
    )

