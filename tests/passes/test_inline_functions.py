"""inline_functions: model-local function calls inlined, except those of the kept domains."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from difforge.artifact.manifest import PassRecord
from difforge.passes import get_pass
from difforge.passes.inline_functions import InlineFunctions
from tests.passes.graphs import function_ops, functions, load, ops, randn, run_ort

# Two calls of a custom op whose body is standard ops: y = 4 * x * x.
TWICE = """
<ir_version: 10, opset_import: ["" : 20, "difforge" : 1]>
agraph (float[N, 4] x) => (float[N, 4] y) {
  t = difforge.Twice (x)
  u = difforge.Twice (t)
  y = Mul (u, x)
}
<domain: "difforge", opset_import: ["" : 20]>
Twice (a) => (b) {
  b = Add (a, a)
}
"""

# A kept custom op and a helper of another domain: y = Relu(2 * x) * 0.5.
MIXED = """
<ir_version: 10, opset_import: ["" : 20, "difforge" : 1, "local" : 1]>
agraph (float[N, 4] x) => (float[N, 4] y) {
  t = difforge.Twice (x)
  r = Relu (t)
  y = local.Half (r)
}
<domain: "difforge", opset_import: ["" : 20]>
Twice (a) => (b) {
  b = Add (a, a)
}
<domain: "local", opset_import: ["" : 20]>
Half (a) => (b) {
  h = Constant <value = float {0.5}> ()
  b = Mul (a, h)
}
"""

# A kept custom op whose body calls a function of another domain: y = Relu(2 * x).
NESTED = """
<ir_version: 10, opset_import: ["" : 20, "difforge" : 1, "local" : 1]>
agraph (float[N, 4] x) => (float[N, 4] y) {
  y = difforge.Outer (x)
}
<domain: "difforge", opset_import: ["" : 20, "local" : 1]>
Outer (a) => (b) {
  t = local.Helper (a)
  b = Relu (t)
}
<domain: "local", opset_import: ["" : 20]>
Helper (a) => (b) {
  b = Add (a, a)
}
"""

NO_FUNCTIONS = """
<ir_version: 10, opset_import: ["" : 20]>
agraph (float[N, 4] x) => (float[N, 4] y) {
  t = Add (x, x)
  y = Relu (t)
}
"""


@pytest.mark.parametrize("keep", [(), ("com.example",)])
def test_calls_outside_the_kept_domains_are_inlined(keep: tuple[str, ...]) -> None:
    x = randn(0, 3, 4)
    expected = run_ort(load(TWICE), {"x": x})[0]
    model = load(TWICE)
    assert ops(model) == ["difforge::Twice", "difforge::Twice", "Mul"]

    inline = InlineFunctions(keep=keep)
    result = inline(model)

    assert result.model is model
    assert ops(model) == ["Add", "Add", "Mul"]
    assert not [n for n in model.graph.all_nodes() if n.domain == "difforge"]
    assert functions(model) == []
    assert result.modified is True and inline.modified is True
    assert inline.details == {"inlined": ["difforge::Twice"], "kept": []}
    assert inline.record() == PassRecord(
        "inline_functions", True, {"inlined": ["difforge::Twice"], "kept": []}
    )

    got = run_ort(model, {"x": x})[0]
    assert_allclose(got, expected, rtol=0, atol=0)
    assert_allclose(got, 4 * x * x, rtol=1e-6, atol=0)


def test_kept_domain_keeps_its_node_and_function() -> None:
    x = randn(1, 5, 4)
    model = load(TWICE)
    inline = InlineFunctions(keep=("difforge",))
    result = inline(model)

    assert ops(model) == ["difforge::Twice", "difforge::Twice", "Mul"]
    assert functions(model) == ["difforge::Twice"]
    assert function_ops(model, "difforge", "Twice") == ["Add"]
    assert model.opset_imports.get("difforge") == 1
    assert result.modified is False and inline.modified is False
    assert inline.record() == PassRecord(
        "inline_functions", False, {"inlined": [], "kept": ["difforge::Twice"]}
    )
    # ONNX Runtime inlines the model-local function itself: the body is the fallback
    assert_allclose(run_ort(model, {"x": x})[0], 4 * x * x, rtol=1e-6, atol=0)


def test_only_the_kept_domains_stay() -> None:
    x = randn(2, 3, 4)
    expected = run_ort(load(MIXED), {"x": x})[0]
    model = load(MIXED)
    inline = InlineFunctions(keep=("difforge",))
    result = inline(model)

    assert ops(model) == ["difforge::Twice", "Relu", "Constant", "Mul"]
    assert functions(model) == ["difforge::Twice"]
    assert result.modified is True
    assert inline.details == {"inlined": ["local::Half"], "kept": ["difforge::Twice"]}

    got = run_ort(model, {"x": x})[0]
    assert_allclose(got, expected, rtol=0, atol=0)
    assert_allclose(got, np.maximum(2 * x, 0) * 0.5, rtol=0, atol=0)


def test_kept_function_body_loses_no_callee() -> None:
    """A kept function calling one that is inlined gets the callee's body: no call dangles."""
    x = randn(3, 2, 4)
    model = load(NESTED)
    inline = InlineFunctions(keep=("difforge",))
    result = inline(model)

    assert ops(model) == ["difforge::Outer"]
    assert functions(model) == ["difforge::Outer"]
    assert function_ops(model, "difforge", "Outer") == ["Add", "Relu"]
    assert result.modified is True
    assert inline.details == {"inlined": ["local::Helper"], "kept": ["difforge::Outer"]}
    assert_allclose(run_ort(model, {"x": x})[0], np.maximum(2 * x, 0), rtol=0, atol=0)


def test_nothing_to_inline_reports_unmodified() -> None:
    model = load(NO_FUNCTIONS)
    inline = InlineFunctions()
    result = inline(model)

    assert ops(model) == ["Add", "Relu"]
    assert result.modified is False
    assert inline.record() == PassRecord("inline_functions", False, {"inlined": [], "kept": []})
    x = randn(4, 2, 4)
    assert_allclose(run_ort(model, {"x": x})[0], np.maximum(2 * x, 0), rtol=0, atol=0)


def test_one_kept_domain_may_be_given_as_a_string() -> None:
    model = load(TWICE)
    graph_pass = get_pass("inline_functions", keep="difforge")
    assert graph_pass.keep == ("difforge",)  # not ('d', 'i', 'f', ...)
    assert not graph_pass(model).modified
    assert "difforge::Twice" in functions(model)
