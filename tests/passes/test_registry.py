"""The pass registry: names, fresh instances with options, errors, and a test module per pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from difforge.artifact.manifest import PassRecord
from difforge.errors import DifforgeError
from difforge.passes import available_passes, get_pass, register_pass
from difforge.passes.base import GraphPass
from difforge.passes.fold_constants import FoldConstants
from difforge.passes.inline_functions import InlineFunctions
from difforge.passes.ort_fusions import OrtFusions
from tests.passes.graphs import load

THREE = {
    "fold_constants": FoldConstants,
    "inline_functions": InlineFunctions,
    "ort_fusions": OrtFusions,
}


def test_available_passes_lists_the_three_sorted() -> None:
    names = available_passes()
    assert set(THREE) <= set(names)
    assert names == sorted(set(names))
    assert "base" not in names


@pytest.mark.parametrize("name", available_passes())
def test_every_pass_is_registered_under_its_module_name(name: str) -> None:
    graph_pass = get_pass(name)
    assert isinstance(graph_pass, GraphPass)
    assert graph_pass.name == name
    assert type(graph_pass).__module__ == f"difforge.passes.{name}"
    assert graph_pass.summary
    assert graph_pass.in_place
    # nothing has run yet
    assert graph_pass.record() == PassRecord(name, False, {})
    if name in THREE:
        assert type(graph_pass) is THREE[name]


def test_get_pass_returns_a_fresh_instance_with_options() -> None:
    first = get_pass("inline_functions", keep=("difforge",))
    second = get_pass("inline_functions", keep=["difforge"])
    default = get_pass("inline_functions")
    assert isinstance(first, InlineFunctions) and isinstance(second, InlineFunctions)
    assert isinstance(default, InlineFunctions)
    assert first is not second and first is not default
    assert first.keep == ("difforge",) and second.keep == ("difforge",)
    assert default.keep == ()

    fusions = get_pass("ort_fusions", keep=("difforge", "plugin"))
    assert isinstance(fusions, OrtFusions)
    assert fusions.keep == ("difforge", "plugin")
    assert get_pass("fold_constants") is not get_pass("fold_constants")


def test_instances_do_not_share_state() -> None:
    text = """
    <ir_version: 10, opset_import: ["" : 20]>
    agraph (float[N, 4] x) => (float[N, 4] y) {
      unused = Neg (x)
      y = Relu (x)
    }
    """
    ran = get_pass("fold_constants")
    ran(load(text))
    fresh = get_pass("fold_constants")
    assert ran.record() == PassRecord("fold_constants", True, {"nodes_removed": 1})
    assert fresh.record() == PassRecord("fold_constants", False, {})


@pytest.mark.parametrize("name", ["no_such_pass", "base", "FoldConstants", ""])
def test_unknown_pass_names_the_known_ones(name: str) -> None:
    with pytest.raises(DifforgeError, match="unknown graph pass") as caught:
        get_pass(name)
    message = str(caught.value)
    assert repr(name) in message
    for known in available_passes():
        assert known in message


def test_a_second_class_under_a_taken_name_is_refused() -> None:
    class Impostor(GraphPass):
        name = "fold_constants"

    with pytest.raises(ValueError, match="fold_constants"):
        register_pass(Impostor)
    assert type(get_pass("fold_constants")) is FoldConstants
    assert register_pass(FoldConstants) is FoldConstants  # re-registering itself is harmless


@pytest.mark.parametrize("name", available_passes())
def test_every_pass_has_a_test_module(name: str) -> None:
    assert (Path(__file__).parent / f"test_{name}.py").is_file(), (
        f"graph pass {name!r} has no tests/passes/test_{name}.py"
    )


def test_an_option_a_pass_does_not_take_is_a_user_error() -> None:
    with pytest.raises(DifforgeError, match=r"graph pass 'fold_constants': .*keep"):
        get_pass("fold_constants", keep=("difforge",))
