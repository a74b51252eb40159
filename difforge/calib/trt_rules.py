"""TensorRT's explicit-quantization rules, checked on a Q/DQ graph without TensorRT.

TensorRT builds a Q/DQ ONNX graph as written (explicit quantization) only if every
QuantizeLinear/DequantizeLinear pair is int8 with zero points of 0 (TensorRT quantizes
symmetrically), its scales are positive and finite, and a per-channel scale runs along the
weight's output-channel axis (Conv: 0; MatMul [in, out]: 1; Gemm with transB: 0). Each rule
returns the problem it finds, so a report names the node and the rule.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from difforge.calib.int8 import WEIGHT_AXES

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def _consts(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    out = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            out[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return out


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def _weight_axis(consumer: onnx.NodeProto) -> int | None:
    if consumer.op_type == "Gemm":
        trans_b = next((a.i for a in consumer.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return WEIGHT_AXES.get(consumer.op_type)


def check_qdq(model: onnx.ModelProto) -> list[str]:
    """Every rule TensorRT's explicit quantization would break on, as ``node: problem``."""
    consts = _consts(model)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    problems: list[str] = []
    pairs = 0
    for node in model.graph.node:
        if node.op_type not in QDQ_OPS:
            continue
        pairs += node.op_type == "DequantizeLinear"
        where = node.name or node.output[0]
        scale = consts.get(node.input[1]) if len(node.input) > 1 else None
        zero = consts.get(node.input[2]) if len(node.input) > 2 else None
        if scale is None:
            problems.append(f"{where}: scale is not a constant")
            continue
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            problems.append(f"{where}: scales must be positive and finite")
        if zero is None:
            problems.append(f"{where}: no zero point (its type then defaults to uint8)")
        else:
            if zero.dtype != np.int8:
                problems.append(f"{where}: {zero.dtype} quantization, TensorRT takes int8")
            if np.any(zero != 0):
                problems.append(f"{where}: zero points must be 0 (symmetric quantization)")
        if scale.size > 1 and node.op_type == "DequantizeLinear":
            for consumer in consumers.get(node.output[0], []):
                want = _weight_axis(consumer)
                if consumer.input[1:2] != [node.output[0]] or want is None:
                    problems.append(f"{where}: per-channel scales feed a non-weight input")
                elif _axis(node) != want:
                    problems.append(
                        f"{where}: per-channel axis {_axis(node)}, but {consumer.op_type}'s "
                        f"output channels are axis {want}"
                    )
    if not pairs:
        problems.append("graph: no Q/DQ pairs (not a quantized graph)")
    return problems
