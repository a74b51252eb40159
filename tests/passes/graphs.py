"""Helpers for the pass tests: ONNX-text models as onnx-ir, their ops, and onnxruntime runs."""

from __future__ import annotations

import numpy as np
import onnx.parser
import onnx_ir as ir
import onnxruntime as ort


def load(text: str) -> ir.Model:
    """An onnx-ir model from ONNX's textual syntax (graph, then model-local functions)."""
    return ir.from_proto(onnx.parser.parse_model(text))


def ops(model: ir.Model) -> list[str]:
    """The main graph's nodes in order: ``Op`` in the default domain, ``domain::Op`` otherwise."""
    return [f"{n.domain}::{n.op_type}" if n.domain else n.op_type for n in model.graph]


def functions(model: ir.Model) -> list[str]:
    """The model-local functions, as ``domain::Name``."""
    return sorted(f"{d}::{n}" for (d, n, _) in model.functions)


def function_ops(model: ir.Model, domain: str, name: str) -> list[str]:
    body = model.functions[(domain, name, "")]
    return [f"{n.domain}::{n.op_type}" if n.domain else n.op_type for n in body]


def run_ort(model: ir.Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """All outputs of ``model`` on ONNX Runtime's CPU provider."""
    session = ort.InferenceSession(
        ir.to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, feeds)


def randn(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


#: Mul by a constant computed from two Constant nodes: foldable, nothing to fuse.
CONSTANT_SUBGRAPH = """
<ir_version: 10, opset_import: ["" : 20]>
agraph (float[N, 4] x) => (float[N, 4] y) {
  a = Constant <value = float[4] {1.0, 2.0, 3.0, 4.0}> ()
  b = Constant <value = float[4] {0.5, 0.5, 0.5, 0.5}> ()
  c = Add (a, b)
  y = Mul (x, c)
}
"""
