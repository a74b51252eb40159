"""A downloaded artifact cannot make difforge read or write outside its folder, choose where a
file is written, or exhaust the machine; tampering is one line naming what is wrong."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from difforge import BuildConfig, build
from difforge.artifact.manifest import read_manifest, write_manifest
from difforge.errors import DifforgeError
from difforge.runtime import GenerateRequest, load
from difforge.runtime.runners._ort_settings import machine_cores


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit(root: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    data = json.loads((root / "manifest.json").read_text())
    change(data)
    (root / "manifest.json").write_text(json.dumps(data))


def test_build_cannot_write_outside_its_output(tiny_sd_export: Path, tmp_path: Path) -> None:
    export = _copy(tiny_sd_export, tmp_path / "box" / "export")
    evil = {"sha256": "0" * 64, "bytes": 1}
    _edit(export, lambda d: d["files"].update({"../../x/evil.txt": evil}))
    with pytest.raises(DifforgeError, match="is not a path inside the artifact"):
        build(BuildConfig(source=export, output=tmp_path / "box" / "built"))
    assert not (tmp_path / "x").exists() and not (tmp_path / "box" / "built").exists()


def test_an_artifact_cannot_choose_where_profiles_are_written(
    tiny_sd_artifact: Path, tmp_path: Path
) -> None:
    root = _copy(tiny_sd_artifact, tmp_path / "art")
    target = str(tmp_path / "elsewhere" / "profile")
    _edit(root, lambda d: d["components"]["denoiser"]["engine"]["settings"].update(
        profile_prefix=target))
    with pytest.raises(DifforgeError, match="profile_prefix: not a setting an artifact may"):
        load(root)
    assert not (tmp_path / "elsewhere").exists()


def test_links_out_of_the_artifact_are_refused(tiny_sd_artifact: Path, tmp_path: Path) -> None:
    root = _copy(tiny_sd_artifact, tmp_path / "art")
    outside = tmp_path / "outside"
    shutil.copytree(root / "tokenizer", outside)  # same bytes: the hashes would match
    shutil.rmtree(root / "tokenizer")
    (root / "tokenizer").symlink_to(outside, target_is_directory=True)
    with pytest.raises(DifforgeError, match=r"tokenizer/merges\.txt goes through a link"):
        read_manifest(root)
    (root / "tokenizer").unlink()
    (root / "tokenizer").mkdir()
    shutil.copyfile(outside / "merges.txt", root / "tokenizer" / "merges.txt")
    (root / "tokenizer" / "vocab.json").symlink_to(outside / "vocab.json")
    with pytest.raises(DifforgeError, match=r"tokenizer/vocab\.json goes through a link"):
        load(root)


def test_every_file_the_runtime_opens_is_hashed(tiny_sd_artifact: Path, tmp_path: Path) -> None:
    root = _copy(tiny_sd_artifact, tmp_path / "art")
    _edit(root, lambda d: d["files"].pop("tokenizer/vocab.json"))
    with pytest.raises(DifforgeError, match=r"names tokenizer/vocab\.json but does not hash it"):
        load(root)


def test_unlisted_files_are_ignored(tiny_sd_artifact: Path, tmp_path: Path) -> None:
    root = _copy(tiny_sd_artifact, tmp_path / "art")
    (root / "README.txt").write_text("notes beside the artifact")
    listed = read_manifest(tiny_sd_artifact).files.keys()
    assert load(root, lazy=True).manifest.files.keys() == listed


def test_recorded_threads_are_bounded_by_the_machine(
    tiny_sd_artifact: Path, tmp_path: Path
) -> None:
    root = _copy(tiny_sd_artifact, tmp_path / "art")
    _edit(root, lambda d: d["components"]["denoiser"]["engine"]["settings"].update(
        intra_op_num_threads=100000))
    pipe = load(root, lazy=True)
    assert pipe.runners["denoiser"].settings["intra_op_num_threads"] == machine_cores()
    assert any("asks for 100000 intra-op threads" in n for n in pipe.notes)
    with pytest.raises(DifforgeError, match="--threads 100000: this machine has"):
        load(tiny_sd_artifact, threads=100000)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d.update(format_version=-5), "format_version: -5 is below 1"),
        (lambda d: d.update(components=[]), "components: expected an object, got list"),
        (lambda d: d["pipeline"].update(latent_channels="4"), "latent_channels: expected an"),
        (lambda d: d["components"]["denoiser"].update(tolerance=float("nan")), "finite number"),
        (lambda d: d["scheduler"].update(default_steps=10**9), "10000"),
        (
            lambda d: d["components"]["denoiser"]["engine"]["settings"].update(
                graph_optimization_level="turbo"),
            "graph_optimization_level: 'turbo' is not one of",
        ),
        (
            lambda d: d["components"]["denoiser"]["engine"]["settings"].update(
                intra_op_num_threads="all"),
            "expected a thread count",
        ),
        (
            lambda d: d["components"]["denoiser"]["engine"]["settings"].update(
                providers=["TensorrtExecutionProvider"]),
            "this onnxruntime has no TensorrtExecutionProvider",
        ),
        (lambda d: d["files"]["denoiser/model.onnx"].update(sha256="xyz"), "64 lowercase hex"),
        (
            lambda d: d["tokenizer"].update(pad_token="<pad>"),
            r"^manifest\.json: tokenizer\.pad_token: '<pad>' is not in tokenizer/vocab\.json$",
        ),
        (lambda d: d["tokenizer"].update(pad_token=["!"]), r"tokenizer\.pad_token: expected a"),
        (lambda d: d["tokenizer"].update(pad_token=""), r"tokenizer\.pad_token: expected 1 to"),
    ],
)
def test_tampered_fields_are_one_line_errors(
    tiny_sd_artifact: Path, tmp_path: Path, change: Callable[[dict[str, Any]], Any], match: str
) -> None:
    root = _copy(tiny_sd_artifact, tmp_path / "art")
    _edit(root, change)
    with pytest.raises(DifforgeError, match=match) as err:
        load(root)
    assert "\n" not in str(err.value)


def test_a_deeply_nested_manifest_is_refused(tiny_sd_artifact: Path, tmp_path: Path) -> None:
    root = _copy(tiny_sd_artifact, tmp_path / "art")
    text = (root / "manifest.json").read_text()
    deep = "[" * 200_000 + "]" * 200_000
    (root / "manifest.json").write_text(text[:-2] + f', "extra": {deep}}}\n')
    with pytest.raises(DifforgeError, match="nests deeper than 32 levels"):
        read_manifest(root)
    (root / "manifest.json").write_text(text[:-2] + f', "extra": {"[" * 40 + "]" * 40}}}\n')
    with pytest.raises(DifforgeError, match="nests deeper than 32 levels"):
        read_manifest(root)


def test_inference_errors_name_the_component(tiny_sd_artifact: Path, tmp_path: Path) -> None:
    """A manifest that lets through a size the U-Net cannot take (a multiple of 8, not 16):
    ONNX Runtime's error becomes one line naming the component."""
    root = _copy(tiny_sd_artifact, tmp_path / "art")

    def loosen(d: dict[str, Any]) -> None:
        d["pipeline"]["resolution"]["multiple"] = 8
        for entry in d["components"].values():
            entry["multiples"] = {}

    _edit(root, loosen)
    pipe = load(root)
    with pytest.raises(DifforgeError, match=r"^denoiser: ONNX Runtime failed while running"):
        pipe(GenerateRequest(prompt="a cat", steps=1, height=136, width=136))


def test_rehashed_manifest_still_runs(tiny_sd_artifact: Path, tmp_path: Path) -> None:
    """Not vacuous: an untampered copy, written again, loads and runs."""
    root = _copy(tiny_sd_artifact, tmp_path / "art")
    write_manifest(root, read_manifest(root))
    image = load(root)(GenerateRequest(prompt="a cat", steps=1)).images
    assert image.dtype == np.uint8 and os.path.isfile(root / "manifest.json")
