"""fold_constants: constant subgraphs become initializers, dead nodes go, functions stay."""

from __future__ import annotations

import numpy as np
from numpy.testing import assert_allclose

from difforge.artifact.manifest import PassRecord
from difforge.passes import get_pass
from difforge.passes.base import fingerprint
from difforge.passes.fold_constants import FoldConstants
from tests.passes.graphs import (
    CONSTANT_SUBGRAPH,
    function_ops,
    functions,
    load,
    ops,
    randn,
    run_ort,
)

DEAD_NODE = """
<ir_version: 10, opset_import: ["" : 20]>
agraph (float[N, 4] x) => (float[N, 4] y) {
  unused = Neg (x)
  y = Relu (x)
}
"""

NOTHING_TO_FOLD = """
<ir_version: 10, opset_import: ["" : 20]>
agraph (float[N, 4] x) => (float[N, 4] y)
<float[4] w = {1.0, -2.0, 3.0, -4.0}>
{
  m = Mul (x, w)
  y = Relu (m)
}
"""

# A difforge custom op beside a constant subgraph: the constants fold, the call stays.
FUNCTION_CALL = """
<ir_version: 10, opset_import: ["" : 20, "difforge" : 1]>
agraph (float[N, 4] x) => (float[N, 4] y) {
  a = Constant <value = float[4] {1.0, 2.0, 3.0, 4.0}> ()
  b = Constant <value = float[4] {0.5, 0.5, 0.5, 0.5}> ()
  c = Add (a, b)
  t = difforge.Twice (x)
  y = Mul (t, c)
}
<domain: "difforge", opset_import: ["" : 20]>
Twice (a) => (b) {
  b = Add (a, a)
}
"""

NOTHING_TO_FOLD_AROUND_A_CALL = """
<ir_version: 10, opset_import: ["" : 20, "difforge" : 1]>
agraph (float[N, 4] x) => (float[N, 4] y) {
  t = difforge.Twice (x)
  y = Relu (t)
}
<domain: "difforge", opset_import: ["" : 20]>
Twice (a) => (b) {
  b = Add (a, a)
}
"""

C = np.array([1.5, 2.5, 3.5, 4.5], dtype=np.float32)


def test_constant_subgraph_folds_to_an_initializer() -> None:
    x = randn(0, 3, 4)
    expected = run_ort(load(CONSTANT_SUBGRAPH), {"x": x})[0]
    model = load(CONSTANT_SUBGRAPH)
    assert ops(model) == ["Constant", "Constant", "Add", "Mul"]

    fold = FoldConstants()
    result = fold(model)

    assert result.model is model  # in place
    assert ops(model) == ["Mul"]
    (mul,) = model.graph
    folded = mul.inputs[1]
    assert folded is not None and folded.is_initializer()
    assert folded.name in model.graph.initializers
    assert_allclose(folded.const_value.numpy(), C)
    assert result.modified is True and fold.modified is True
    assert fold.details == {"nodes_removed": 3}
    assert fold.record() == PassRecord("fold_constants", True, {"nodes_removed": 3})

    got = run_ort(model, {"x": x})[0]
    assert_allclose(got, expected, rtol=0, atol=0)
    assert_allclose(got, x * C, rtol=1e-7, atol=0)


def test_dead_node_is_removed() -> None:
    x = randn(1, 2, 4)
    model = load(DEAD_NODE)
    fold = FoldConstants()
    result = fold(model)

    assert ops(model) == ["Relu"]
    assert result.modified is True
    assert fold.record() == PassRecord("fold_constants", True, {"nodes_removed": 1})
    assert_allclose(run_ort(model, {"x": x})[0], np.maximum(x, 0), rtol=0, atol=0)


def test_nothing_to_fold_reports_unmodified() -> None:
    model = load(NOTHING_TO_FOLD)
    before = fingerprint(model)
    fold = FoldConstants()
    result = fold(model)

    assert ops(model) == ["Mul", "Relu"]
    assert list(model.graph.initializers) == ["w"]
    assert fingerprint(model) == before
    assert result.modified is False and fold.modified is False
    assert fold.record() == PassRecord("fold_constants", False, {"nodes_removed": 0})
    x = randn(2, 5, 4)
    w = np.array([1.0, -2.0, 3.0, -4.0], dtype=np.float32)
    assert_allclose(run_ort(model, {"x": x})[0], np.maximum(x * w, 0), rtol=1e-7, atol=0)


def test_model_local_function_is_not_inlined() -> None:
    x = randn(3, 3, 4)
    expected = run_ort(load(FUNCTION_CALL), {"x": x})[0]
    model = load(FUNCTION_CALL)
    fold = FoldConstants()
    result = fold(model)

    # the constants folded (so the optimizer did run) ...
    assert result.modified is True
    assert fold.details == {"nodes_removed": 3}
    # ... but the custom-op call and its body are untouched
    assert ops(model) == ["difforge::Twice", "Mul"]
    assert functions(model) == ["difforge::Twice"]
    assert function_ops(model, "difforge", "Twice") == ["Add"]
    assert model.opset_imports.get("difforge") == 1

    got = run_ort(model, {"x": x})[0]  # ORT runs the function body itself
    assert_allclose(got, expected, rtol=0, atol=0)
    assert_allclose(got, 2 * x * C, rtol=1e-7, atol=0)


def test_nothing_to_fold_around_a_function_call_reports_unmodified() -> None:
    model = load(NOTHING_TO_FOLD_AROUND_A_CALL)
    assert ops(model) == ["difforge::Twice", "Relu"]
    fold = FoldConstants()
    result = fold(model)

    assert ops(model) == ["difforge::Twice", "Relu"]
    assert functions(model) == ["difforge::Twice"]
    assert result.modified is False
    assert fold.record() == PassRecord("fold_constants", False, {"nodes_removed": 0})
    x = randn(4, 2, 4)
    assert_allclose(run_ort(model, {"x": x})[0], np.maximum(2 * x, 0), rtol=0, atol=0)


FOLDABLE_BODY = """
<ir_version: 10, opset_import: ["" : 20, "difforge" : 1]>
agraph (float[N, 4] x) => (float[N, 4] y) { y = difforge.Scale (x) }
<domain: "difforge", opset_import: ["" : 20]>
Scale (a) => (b) {
    c1 = Constant <value = float {1.0}> ()
    c2 = Constant <value = float {2.0}> ()
    c = Add (c1, c2)
    b = Mul (a, c)
}
"""


def test_folding_inside_a_kept_function_body_counts_as_a_change() -> None:
    model = load(FOLDABLE_BODY)
    x = randn(5, 3, 4)
    before = run_ort(model, {"x": x})[0]
    graph_pass = get_pass("fold_constants")
    result = graph_pass(model)
    assert function_ops(model, "difforge", "Scale") == ["Constant", "Mul"]
    assert ops(model) == ["difforge::Scale"]
    assert result.modified and graph_pass.record().modified
    np.testing.assert_allclose(run_ort(model, {"x": x})[0], before, rtol=0, atol=0)
