"""ort_fusions: patterns fused into com.microsoft ops the CPU provider runs; kept domains stay."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from difforge.artifact.manifest import PassRecord
from difforge.passes import get_pass
from difforge.passes.ort_fusions import OrtFusions, cpu_rewrite_rules
from tests.passes.graphs import (
    CONSTANT_SUBGRAPH,
    function_ops,
    functions,
    load,
    ops,
    randn,
    run_ort,
)

GAMMA = np.array([1.0, 0.5, 2.0, 1.5, 1.0, 0.25, 3.0, 1.0], dtype=np.float32)
BETA = np.array([0.0, 0.1, 0.2, 0.3, -0.1, -0.2, 0.5, 0.0], dtype=np.float32)
NORM_WEIGHTS = """<float[8] gamma = {1.0, 0.5, 2.0, 1.5, 1.0, 0.25, 3.0, 1.0},
 float[8] beta = {0.0, 0.1, 0.2, 0.3, -0.1, -0.2, 0.5, 0.0}>"""

SKIP_LAYER_NORM = f"""
<ir_version: 10, opset_import: ["" : 20]>
agraph (float[B, S, 8] x, float[B, S, 8] skip) => (float[B, S, 8] y)
{NORM_WEIGHTS}
{{
  s = Add (x, skip)
  y = LayerNormalization <axis = -1, epsilon = 0.00001> (s, gamma, beta)
}}
"""

# The same, with a difforge custom op on the normalised output: y = 2 * LayerNorm(x + skip).
SKIP_LAYER_NORM_THEN_TWICE = f"""
<ir_version: 10, opset_import: ["" : 20, "difforge" : 1]>
agraph (float[B, S, 8] x, float[B, S, 8] skip) => (float[B, S, 8] y)
{NORM_WEIGHTS}
{{
  s = Add (x, skip)
  n = LayerNormalization <axis = -1, epsilon = 0.00001> (s, gamma, beta)
  y = difforge.Twice (n)
}}
<domain: "difforge", opset_import: ["" : 20]>
Twice (a) => (b) {{
  b = Add (a, a)
}}
"""

# x * 0.5 * (1 + erf(x / sqrt(2))), as torch's exact GELU decomposes.
ERF_GELU = """
<ir_version: 10, opset_import: ["" : 20]>
agraph (float[N, 8] x) => (float[N, 8] y) {
  sqrt2 = Constant <value = float {1.4142135}> ()
  one = Constant <value = float {1.0}> ()
  half = Constant <value = float {0.5}> ()
  d = Div (x, sqrt2)
  e = Erf (d)
  p = Add (e, one)
  h = Mul (half, p)
  y = Mul (x, h)
}
"""

NOTHING_TO_FUSE = """
<ir_version: 10, opset_import: ["" : 20]>
agraph (float[N, 4] x) => (float[N, 4] y)
<float[4] w = {1.0, -2.0, 3.0, -4.0}>
{
  m = Mul (x, w)
  y = Relu (m)
}
"""


# torchlib's group norm: InstanceNormalization over [N, groups, -1], static shapes. onnxscript's
# ORT rules turn it into com.microsoft.GroupNorm, which the CPU provider does not implement.
INSTANCE_NORM_GROUP_NORM = """
<ir_version: 10, opset_import: ["" : 20]>
agraph (float[2, 4, 3, 3] x) => (float[2, 4, 3, 3] y)
<int64[3] grouped = {0, 2, -1}, int64[4] shape = {2, 4, 3, 3},
 float[2] ones = {1.0, 1.0}, float[2] zeros = {0.0, 0.0},
 float[4, 1, 1] gamma = {1.0, 0.5, 2.0, -1.0}, float[4, 1, 1] beta = {0.1, 0.2, 0.3, 0.4}>
{
  r = Reshape (x, grouped)
  n = InstanceNormalization <epsilon = 0.00001> (r, ones, zeros)
  b = Reshape (n, shape)
  m = Mul (b, gamma)
  y = Add (m, beta)
}
"""


def layer_norm(s: np.ndarray) -> np.ndarray:
    mean = s.mean(-1, keepdims=True)
    var = ((s - mean) ** 2).mean(-1, keepdims=True)
    return (s - mean) / np.sqrt(var + 1e-5) * GAMMA + BETA


def skip_feeds(seed: int) -> dict[str, np.ndarray]:
    return {"x": randn(seed, 2, 3, 8), "skip": randn(seed + 100, 2, 3, 8)}


def test_add_then_layer_norm_fuses_into_skip_layer_normalization() -> None:
    feeds = skip_feeds(0)
    expected = run_ort(load(SKIP_LAYER_NORM), feeds)[0]
    model = load(SKIP_LAYER_NORM)
    assert ops(model) == ["Add", "LayerNormalization"]

    fuse = OrtFusions()
    result = fuse(model)

    assert result.model is model
    assert ops(model) == ["com.microsoft::SkipLayerNormalization"]
    assert model.opset_imports.get("com.microsoft") == 1
    assert result.modified is True and fuse.modified is True
    assert fuse.details == {"fusions": {"skip_layer_normalization": 1}}
    assert fuse.record() == PassRecord(
        "ort_fusions", True, {"fusions": {"skip_layer_normalization": 1}}
    )

    got = run_ort(model, feeds)[0]
    assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert_allclose(got, layer_norm(feeds["x"] + feeds["skip"]), rtol=1e-5, atol=1e-5)


def test_erf_gelu_fuses_into_gelu() -> None:
    x = randn(1, 5, 8)
    expected = run_ort(load(ERF_GELU), {"x": x})[0]
    model = load(ERF_GELU)
    fuse = OrtFusions()
    result = fuse(model)

    assert ops(model) == ["com.microsoft::Gelu"]
    assert result.modified is True
    assert fuse.details == {"fusions": {"erf_gelu": 1}}
    assert_allclose(run_ort(model, {"x": x})[0], expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("keep", "after", "kept"),
    [
        (("difforge",), ["com.microsoft::SkipLayerNormalization", "difforge::Twice"], True),
        ((), ["com.microsoft::SkipLayerNormalization", "Add"], False),
    ],
)
def test_kept_domains_survive_the_clean_ups(
    keep: tuple[str, ...], after: list[str], kept: bool
) -> None:
    feeds = skip_feeds(2)
    expected = run_ort(load(SKIP_LAYER_NORM_THEN_TWICE), feeds)[0]
    model = load(SKIP_LAYER_NORM_THEN_TWICE)
    fuse = OrtFusions(keep=keep)
    result = fuse(model)

    assert ops(model) == after
    assert result.modified is True
    assert fuse.details == {"fusions": {"skip_layer_normalization": 1}}
    if kept:
        assert functions(model) == ["difforge::Twice"]
        assert function_ops(model, "difforge", "Twice") == ["Add"]
    else:
        assert functions(model) == []
        assert not [n for n in model.graph.all_nodes() if n.domain == "difforge"]

    got = run_ort(model, feeds)[0]
    assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert_allclose(got, 2 * layer_norm(feeds["x"] + feeds["skip"]), rtol=1e-5, atol=1e-5)


def test_nothing_to_fuse_reports_unmodified() -> None:
    model = load(NOTHING_TO_FUSE)
    fuse = OrtFusions()
    result = fuse(model)

    assert ops(model) == ["Mul", "Relu"]
    assert result.modified is False and fuse.modified is False
    assert fuse.record() == PassRecord("ort_fusions", False, {"fusions": {}})
    x = randn(3, 2, 4)
    w = np.array([1.0, -2.0, 3.0, -4.0], dtype=np.float32)
    assert_allclose(run_ort(model, {"x": x})[0], np.maximum(x * w, 0), rtol=1e-7, atol=0)


def test_constant_folding_without_fusions_still_counts_as_modified() -> None:
    """The clean-ups fold constants: a change, though no fusion fired."""
    x = randn(4, 3, 4)
    model = load(CONSTANT_SUBGRAPH)
    fuse = OrtFusions()
    result = fuse(model)

    assert ops(model) == ["Mul"]
    assert result.modified is True
    assert fuse.details == {"fusions": {}}
    c = np.array([1.5, 2.5, 3.5, 4.5], dtype=np.float32)
    assert_allclose(run_ort(model, {"x": x})[0], x * c, rtol=1e-7, atol=0)


def test_instance_norm_group_norm_is_not_turned_into_cuda_only_group_norm() -> None:
    from onnxscript.rewriter.ort_fusions import (
        ORT_PATTERN_REWRITE_RULES,
        instance_to_group_normalization,
    )

    group_norm_rules = instance_to_group_normalization.rules.rules
    rules = cpu_rewrite_rules()
    assert len(rules) == len(ORT_PATTERN_REWRITE_RULES) - len(group_norm_rules) > 0
    assert not any(r is g for r in rules for g in group_norm_rules)
    # the graph is one onnxscript's group-norm rule does rewrite ...
    assert instance_to_group_normalization.rules.apply_to_model(load(INSTANCE_NORM_GROUP_NORM)) == 1

    x = randn(5, 2, 4, 3, 3)
    expected = run_ort(load(INSTANCE_NORM_GROUP_NORM), {"x": x})[0]
    model = load(INSTANCE_NORM_GROUP_NORM)
    fuse = OrtFusions()
    result = fuse(model)

    # ... but not this pass: the graph stays as it was and still runs on the CPU provider
    assert ops(model) == ["Reshape", "InstanceNormalization", "Reshape", "Mul", "Add"]
    assert result.modified is False
    assert fuse.details == {"fusions": {}}
    assert_allclose(run_ort(model, {"x": x})[0], expected, rtol=0, atol=0)


INITIALIZER_AS_INPUT = """
<ir_version: 10, opset_import: ["" : 20]>
agraph (float[N, 4] x, float[4] w) => (float[N, 4] y) <float[4] w = {1.0, 2.0, 3.0, 4.0}> {
    y = Mul (x, w)
}
"""


def test_changed_graph_inputs_count_as_a_change() -> None:
    model = load(INITIALIZER_AS_INPUT)
    graph_pass = get_pass("ort_fusions")
    result = graph_pass(model)
    assert [v.name for v in model.graph.inputs] == ["x"]  # the initializer is no longer an input
    assert result.modified
