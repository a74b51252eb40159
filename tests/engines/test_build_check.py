"""The builder's check that graph passes keep what a component computes, and where it breaks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from difforge.artifact.manifest import ComponentEntry, TensorSpec
from difforge.engines.ort.builder import check_equivalent
from difforge.engines.ort.divergence import first_divergence
from difforge.errors import DifforgeError


def _mlp(path: Path, w1: np.ndarray, w2: np.ndarray) -> Path:
    """x -> MatMul(w1) -> h1 -> Relu -> h2 -> MatMul(w2) -> y."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"], name="first_matmul"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
        helper.make_node("MatMul", ["h2", "w2"], ["y"], name="second_matmul"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    onnx.save(model, str(path))
    return path


@pytest.fixture
def weights() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (
        rng.standard_normal((8, 16)).astype(np.float32),
        rng.standard_normal((16, 4)).astype(np.float32),
    )


def _entry() -> ComponentEntry:
    return ComponentEntry(
        role="denoiser",
        file="model.onnx",
        inputs=[TensorSpec("x", "float32", ["batch", 8])],
        outputs=[TensorSpec("y", "float32", ["batch", 4])],
        axes={"batch": [1, 2, 4]},
        tolerance=1e-4,
    )


def test_first_divergence_names_the_rewrite_that_broke(
    tmp_path: Path, weights: tuple[np.ndarray, np.ndarray]
) -> None:
    w1, w2 = weights
    before = _mlp(tmp_path / "before.onnx", w1, w2)
    broken = w1.copy()
    broken[0] += 0.5  # what a wrong fusion of the first MatMul would do
    after = _mlp(tmp_path / "after.onnx", broken, w2)
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)}
    found = first_divergence(before, after, feeds, 1e-4)
    assert found is not None
    # h2 and y differ too; the first in the graph's order is the one reported.
    assert found.tensor == "h1" and found.producer_after == ("MatMul", "first_matmul")
    assert found.max_rel > 1e-2
    assert first_divergence(before, _mlp(tmp_path / "same.onnx", w1, w2), feeds, 1e-4) is None


def test_check_equivalent_reports_where_the_graphs_part(
    tmp_path: Path, weights: tuple[np.ndarray, np.ndarray]
) -> None:
    w1, w2 = weights
    before = _mlp(tmp_path / "before.onnx", w1, w2)
    assert check_equivalent(_entry(), before, before, "denoiser")["max_rel"] == 0.0
    broken = w2 * np.float32(1.01)  # only the last MatMul: h1 and h2 still agree
    after = _mlp(tmp_path / "after.onnx", w1, broken)
    with pytest.raises(DifforgeError) as err:
        check_equivalent(_entry(), before, after, "denoiser")
    message = str(err.value)
    assert "optimised denoiser.y differs from the exported graph" in message
    assert "first differing tensor 'y'" in message and "MatMul node 'second_matmul'" in message
