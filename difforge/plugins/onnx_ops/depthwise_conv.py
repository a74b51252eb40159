"""ONNX side of ``difforge::depthwise_conv2d``: the ``difforge::DepthwiseConv2D`` node.

Node: ``y = DepthwiseConv2D(x, weight[, bias])`` with Conv-style attributes ``strides``,
``dilations``, ``pads`` (INTS) and ``group`` (= C), so the fallback body is a single ONNX
``Conv`` whose attributes refer to the node's; plus ``plugin_namespace`` / ``plugin_version``
for the TensorRT plugin. Stride, dilation and padding must be constants at export.
"""

from __future__ import annotations

from typing import Any

import onnx_ir as ir
from onnx import FunctionProto, TensorShapeProto, TypeProto
from onnx.defs import OpSchema
from onnxscript.values import Opset

from difforge.errors import DifforgeError
from difforge.plugins.onnx_ops._function_builder import ATTR_INT, ATTR_INTS, FunctionBuilder

DOMAIN = "difforge"
NAME = "DepthwiseConv2D"
VERSION = 1
PLUGIN_NAMESPACE = "difforge"
PLUGIN_VERSION = "1"
ATTRIBUTES = ("strides", "dilations", "pads", "group", "plugin_namespace", "plugin_version")
MIN_OPSET = 11

_A = OpSchema.AttrType


def _infer(ctx: Any) -> None:
    # [B, C, Ho, Wo]: spatial dims only when known (dynamic ones stay unnamed).
    x_type = ctx.get_input_type(0)
    out = TypeProto()
    out.tensor_type.elem_type = x_type.tensor_type.elem_type
    if x_type.tensor_type.HasField("shape") and ctx.get_input_type(1).tensor_type.HasField("shape"):
        x_dims = x_type.tensor_type.shape.dim
        w_dims = ctx.get_input_type(1).tensor_type.shape.dim
        stride = list(ctx.get_attribute("strides").ints)
        dilation = list(ctx.get_attribute("dilations").ints)
        pads = list(ctx.get_attribute("pads").ints)
        shape = out.tensor_type.shape
        for i in range(2):
            shape.dim.append(TensorShapeProto.Dimension())
            shape.dim[i].CopyFrom(x_dims[i])
        for i in range(2):
            dim = shape.dim.add()
            size, kernel = x_dims[2 + i], w_dims[2 + i]
            if size.HasField("dim_value") and kernel.HasField("dim_value"):
                span = dilation[i] * (kernel.dim_value - 1) + 1
                total = size.dim_value + pads[i] + pads[i + 2] - span
                dim.dim_value = total // stride[i] + 1
    ctx.set_output_type(0, out)


def make_schema() -> OpSchema:
    """The ``difforge::DepthwiseConv2D`` v1 schema."""
    schema = OpSchema(
        NAME,
        DOMAIN,
        VERSION,
        "Depthwise (group = C) K x K convolution, K odd <= 31.",
        inputs=[
            OpSchema.FormalParameter("x", "T", "[B, C, H, W]"),
            OpSchema.FormalParameter("weight", "T", "[C, 1, K, K]"),
            OpSchema.FormalParameter(
                "bias", "T", "[C]", param_option=OpSchema.FormalParameterOption.Optional
            ),
        ],
        outputs=[OpSchema.FormalParameter("y", "T", "[B, C, Ho, Wo]")],
        type_constraints=[
            ("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], "float tensors")
        ],
        attributes=[
            OpSchema.Attribute("strides", _A.INTS, "[s, s]"),
            OpSchema.Attribute("dilations", _A.INTS, "[d, d]"),
            OpSchema.Attribute("pads", _A.INTS, "[p, p, p, p]"),
            OpSchema.Attribute("group", _A.INT, "channels C"),
            OpSchema.Attribute("plugin_namespace", _A.STRING, "TensorRT plugin namespace"),
            OpSchema.Attribute("plugin_version", _A.STRING, "TensorRT plugin version"),
        ],
    )
    schema.set_type_and_shape_inference_function(_infer)
    return schema


def _static(value: Any, what: str) -> int:
    if isinstance(value, int):
        return value
    raise DifforgeError(f"depthwise conv {what} must be a constant for ONNX export")


def translate_depthwise_conv2d(
    x: ir.Value,
    weight: ir.Value,
    bias: ir.Value | None,
    stride: int,
    dilation: int,
    padding: int,
) -> ir.Value:
    """onnxscript translation for ``torch.ops.difforge.depthwise_conv2d.default``."""
    channels = weight.shape[0] if weight.shape is not None else None
    s = _static(stride, "stride")
    d = _static(dilation, "dilation")
    p = _static(padding, "padding")
    attrs: dict[str, Any] = {
        "strides": [s, s],
        "dilations": [d, d],
        "pads": [p, p, p, p],
        "group": _static(channels, "channel count"),
        "plugin_namespace": PLUGIN_NAMESPACE,
        "plugin_version": PLUGIN_VERSION,
    }
    difforge = Opset(DOMAIN, VERSION)
    inputs = (x, weight) if bias is None else (x, weight, bias)
    return difforge.DepthwiseConv2D(*inputs, **attrs)


def fallback_function(opset: int) -> FunctionProto:
    """Standard-op body: one ``Conv`` with ``group`` = C."""
    if opset < MIN_OPSET:
        raise DifforgeError(f"DepthwiseConv2D's ONNX fallback needs opset >= {MIN_OPSET}")
    f = FunctionBuilder("dw")
    refs = {
        "strides": ("strides", ATTR_INTS),
        "dilations": ("dilations", ATTR_INTS),
        "pads": ("pads", ATTR_INTS),
        "group": ("group", ATTR_INT),
    }
    conv = f.op_ref("Conv", ["x", "weight", "bias"], refs)
    f.op_to("y", "Identity", conv)
    return f.function(
        DOMAIN,
        NAME,
        ["x", "weight", "bias"],
        ["y"],
        ATTRIBUTES,
        opset,
        "Standard-op fallback of difforge::DepthwiseConv2D (Conv with group = C).",
    )
