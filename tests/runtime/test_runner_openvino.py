"""The OpenVINO runner: recorded settings are an allow-list, a blob made elsewhere is compiled
again with a note (same outputs), threads are bounded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from difforge.artifact.manifest import read_manifest, write_manifest
from difforge.errors import DifforgeError
from difforge.runtime import load
from difforge.runtime.runners.openvino import OpenVinoRunner


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit(root: Path, key: str, **settings: object) -> None:
    manifest = read_manifest(root)
    engine = manifest.components[key].engine
    assert engine is not None
    engine.settings.update(settings)
    write_manifest(root, manifest)


def test_a_blob_from_another_machine_is_compiled_again(
    tiny_sd_openvino: Path, tmp_path: Path
) -> None:
    art = _copy(tiny_sd_openvino, tmp_path / "a")
    _edit(art, "vae_decoder", blob_for={"openvino": "0", "cpu": "elsewhere", "capabilities": []})
    pipe = load(art)
    runner = pipe.runners["vae_decoder"]
    assert isinstance(runner, OpenVinoRunner) and runner.compiled_here
    assert any("made for another CPU" in n for n in pipe.notes)
    latent = np.random.default_rng(0).standard_normal((1, 4, 32, 32), dtype=np.float32)
    fresh = runner.infer({"latent": latent})["image"]
    imported = load(tiny_sd_openvino).runners["vae_decoder"].infer({"latent": latent})["image"]
    np.testing.assert_allclose(fresh, imported, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"cache_dir": "/tmp/x"}, "cache_dir: not a setting an artifact may record"),
        ({"device": "GPU"}, "device: only CPU engines are built"),
        ({"inference_precision": "int4"}, "inference_precision: expected one of"),
        ({"threads": -3}, "threads: expected a thread count"),
        ({"blob": "../../x"}, "blob: expected a file name"),
    ],
)
def test_tampered_settings_are_refused(
    tiny_sd_openvino: Path, tmp_path: Path, settings: dict[str, object], needle: str
) -> None:
    art = _copy(tiny_sd_openvino, tmp_path / "t")
    _edit(art, "denoiser", **settings)
    with pytest.raises(DifforgeError, match=needle):
        load(art)


def test_threads_are_bounded(tiny_sd_openvino: Path) -> None:
    with pytest.raises(DifforgeError, match="--threads must be in"):
        load(tiny_sd_openvino, threads=100_000)
    pipe = load(tiny_sd_openvino, threads=1, lazy=True)
    assert all(r.settings["threads"] == 1 for r in pipe.runners.values())  # type: ignore[attr-defined]


def test_manifest_records_what_the_blob_is_for(tiny_sd_openvino: Path) -> None:
    data = json.loads((tiny_sd_openvino / "manifest.json").read_text())
    settings = data["components"]["denoiser"]["engine"]["settings"]
    assert set(settings["blob_for"]) == {"openvino", "cpu", "capabilities"}
    assert settings["blob"] == "model.blob"


def test_onnx_runtime_providers_are_refused(tiny_sd_openvino: Path) -> None:
    with pytest.raises(DifforgeError, match="this artifact's engines are OpenVINO's"):
        load(tiny_sd_openvino, lazy=True, providers=["CPUExecutionProvider"])
