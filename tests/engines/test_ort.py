"""The ONNX Runtime builder: passes recorded from the pass objects, custom ops inlined by default
or kept as plugin nodes, engine records, and the same images either way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from difforge import BuildConfig, build
from difforge.artifact.manifest import read_manifest
from difforge.artifact.view import describe
from difforge.errors import DifforgeError
from difforge.runtime import GenerateRequest, load

OP = "difforge::LocalAttention2D"


def _graph_ops(path: Path) -> tuple[set[str], set[str]]:
    model = onnx.load(str(path), load_external_data=False)
    nodes = {f"{n.domain or 'ai.onnx'}::{n.op_type}" for n in model.graph.node}
    functions = {f"{f.domain}::{f.name}" for f in model.functions}
    return nodes, functions


@pytest.fixture(scope="module")
def builds(clear_export: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("builds")
    return {
        mode: build(BuildConfig(source=clear_export, output=root / mode, custom_ops=custom))
        for mode, custom in (("default", None), ("plugin", "plugin"))
    }


def test_the_export_holds_the_custom_op(clear_export: Path) -> None:
    manifest = read_manifest(clear_export)
    nodes, functions = _graph_ops(clear_export / manifest.components["denoiser"].file)
    assert OP in nodes and OP in functions


def test_default_build_inlines_custom_ops(builds: dict[str, Path]) -> None:
    manifest = read_manifest(builds["default"])
    entry = manifest.components["denoiser"]
    assert entry.engine is not None
    assert entry.engine.custom_ops == {OP: "inlined"}
    nodes, functions = _graph_ops(builds["default"] / entry.file)
    assert not any(n.startswith("difforge::") for n in nodes) and not functions
    inline = entry.engine.passes[0]
    assert (inline.name, inline.modified) == ("inline_functions", True)
    assert inline.details["inlined"] == [OP]


def test_plugin_build_keeps_the_node_and_its_body(builds: dict[str, Path]) -> None:
    manifest = read_manifest(builds["plugin"])
    entry = manifest.components["denoiser"]
    assert entry.engine is not None and entry.engine.custom_ops == {OP: "plugin"}
    nodes, functions = _graph_ops(builds["plugin"] / entry.file)
    assert OP in nodes and OP in functions  # the body stays as the fallback
    assert entry.engine.passes[0].details["kept"] == [OP]
    assert "custom op difforge::LocalAttention2D: kept as a plugin node" in describe(manifest)
    # components without custom ops record none
    assert manifest.components["vae_decoder"].engine.custom_ops == {}  # type: ignore[union-attr]


def test_both_builds_make_the_same_images(builds: dict[str, Path]) -> None:
    latents = np.random.default_rng(0).standard_normal((1, 4, 16, 16), dtype=np.float32)
    images = [
        load(path)(
            GenerateRequest(class_label=7, steps=4, seed=0, latents=latents)
        ).images[0].astype(int)
        for path in builds.values()
    ]
    assert np.abs(images[0] - images[1]).max() <= 1
    assert images[0].std() > 1


def test_unoptimised_build_copies_graphs_and_runs_no_pass(
    clear_export: Path, tmp_path: Path
) -> None:
    out = build(BuildConfig(source=clear_export, output=tmp_path / "raw", optimize=False))
    manifest = read_manifest(out)
    for key, entry in manifest.components.items():
        assert entry.engine is not None and entry.engine.passes == [], key
        exported = (clear_export / entry.file).read_bytes()
        assert (out / entry.file).read_bytes() == exported
    assert manifest.components["denoiser"].engine.custom_ops == {OP: "plugin"}  # type: ignore[union-attr]


def test_bad_custom_ops_value_is_refused_before_work(clear_export: Path, tmp_path: Path) -> None:
    with pytest.raises(DifforgeError, match="--custom-ops takes plugin or inline"):
        build(BuildConfig(source=clear_export, output=tmp_path / "x", custom_ops="maybe"))
    assert not (tmp_path / "x").exists()
