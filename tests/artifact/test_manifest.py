"""The typed manifest (format 2): written and read back, and refused field by field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from difforge.artifact.manifest import (
    FORMAT_VERSION,
    Manifest,
    Stage,
    read_manifest,
    write_manifest,
)
from difforge.errors import DifforgeError


def _data(artifact: Path) -> dict[str, Any]:
    return json.loads((artifact / "manifest.json").read_text())


def _refused(tmp_path: Path, artifact: Path, edit: Any, match: str) -> None:
    copy = tmp_path / "copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(artifact, copy)
    data = _data(copy)
    edit(data)
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(DifforgeError, match=match) as err:
        read_manifest(copy)
    assert "\n" not in str(err.value)


def test_round_trip_keeps_every_section(tiny_sd_artifact: Path, tmp_path: Path) -> None:
    manifest = read_manifest(tiny_sd_artifact)
    assert manifest.stage is Stage.BUILT
    again = Manifest.from_dict(json.loads(json.dumps(manifest.to_dict())))
    assert again == manifest
    copy = tmp_path / "art"
    shutil.copytree(tiny_sd_artifact, copy)
    write_manifest(copy, manifest)
    assert read_manifest(copy) == manifest


def test_built_components_record_precision_and_engine(tiny_sd_artifact: Path) -> None:
    manifest = read_manifest(tiny_sd_artifact)
    for key, entry in manifest.components.items():
        assert entry.precision == "fp32"
        assert entry.engine is not None and entry.engine.backend == "ort", key
        assert entry.engine.files[0] == entry.file
        assert all(f in manifest.files for f in entry.engine.files)
        assert entry.engine.settings["providers"] == ["CPUExecutionProvider"]
        names = [p.name for p in entry.engine.passes]
        assert names == ["inline_functions", "fold_constants", "ort_fusions"], key
        assert entry.engine.check is not None and entry.engine.check["max_rel"] <= 1e-4
    fused = manifest.components["denoiser"].engine
    assert fused is not None and fused.passes[-1].details["fusions"]  # attention really fused
    assert fused.passes[-1].modified


def test_export_folder_has_no_engine(tiny_sd_export: Path) -> None:
    manifest = read_manifest(tiny_sd_export)
    assert manifest.stage is Stage.EXPORTED
    assert all(e.engine is None for e in manifest.components.values())


def _vocab_id(artifact: Path, token: str) -> int:
    return int(json.loads((artifact / "tokenizer" / "vocab.json").read_text())[token])


def test_presets_pad_with_end_of_text(tiny_sd_export: Path) -> None:
    assert _data(tiny_sd_export)["tokenizer"]["pad_token"] == "<|endoftext|>"
    tokenizer = read_manifest(tiny_sd_export).tokenizer
    assert tokenizer is not None and tokenizer.pad_token == "<|endoftext|>"


@pytest.mark.parametrize(("pad", "token"), [(None, "<|endoftext|>"), ("!", "!")])
def test_the_runtime_pads_with_the_manifests_pad_token(
    tiny_sd_artifact: Path, tmp_path: Path, pad: str | None, token: str
) -> None:
    """A manifest written before the field (none) pads with end-of-text, as then."""
    from difforge.runtime import load

    copy = tmp_path / "copy"
    shutil.copytree(tiny_sd_artifact, copy)
    data = _data(copy)
    data["tokenizer"].pop("pad_token")
    if pad is not None:
        data["tokenizer"]["pad_token"] = pad
    (copy / "manifest.json").write_text(json.dumps(data))
    tokenizer = load(copy, lazy=True).tokenizer
    assert tokenizer is not None
    row = tokenizer(["a cat"])[0]
    assert row[3] == _vocab_id(copy, "<|endoftext|>")
    assert list(row[4:]) == [_vocab_id(copy, token)] * (len(row) - 4)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(format_version=1), "format 1 was written by an older difforge"),
        (lambda d: d.update(format_version=FORMAT_VERSION + 1), "newer than this difforge"),
        (lambda d: d.update(format_version=True), "format_version: expected an integer"),
        (lambda d: d.update(stage="cooked"), "stage: 'cooked' is not one of"),
        (lambda d: d["pipeline"].update(type="video"), "pipeline.type: 'video' is not one of"),
        (
            lambda d: d["components"]["denoiser"]["axes"].update(batch=[1, 8, 2]),
            r"components.denoiser.axes.batch: needs min <= opt <= max",
        ),
        (
            lambda d: d["components"]["denoiser"].update(precision="fp8"),
            r"components.denoiser.precision: 'fp8' is not one of",
        ),
        (
            lambda d: d["components"]["vae_decoder"]["engine"]["custom_ops"].update(x="kept"),
            r"custom_ops.x: 'kept' is not one of",
        ),
        (
            lambda d: d["pipeline"]["resolution"].update(default="big"),
            r"pipeline.resolution.default: expected an integer, got string 'big'",
        ),
        (lambda d: d["scheduler"].pop("default_steps"), r"scheduler.default_steps: missing"),
        (
            lambda d: d["files"].update({"../outside.txt": {"sha256": "0", "bytes": 0}}),
            r"'../outside.txt' is not a path inside the artifact",
        ),
        (
            lambda d: d["components"]["denoiser"].update(file="/etc/passwd"),
            r"components.denoiser.file: '/etc/passwd' is not a path inside the artifact",
        ),
        (
            lambda d: d["tokenizer"].update(vocab="../../vocab.json"),
            r"tokenizer.vocab: '../../vocab.json' is not a path inside the artifact",
        ),
        (
            lambda d: d.update(step_plan={"variants": {"base": "denoiser"}, "rules": [
                {"variant": "ghost", "from": 0.0, "to": 0.5}]}),
            "step_plan names unknown variant 'ghost'",
        ),
    ],
)
def test_a_bad_field_is_named_in_one_line(
    tiny_sd_artifact: Path, tmp_path: Path, edit: Any, match: str
) -> None:
    _refused(tmp_path, tiny_sd_artifact, edit, match)


def test_v1_refusal_says_how_to_rebuild(tiny_sd_artifact: Path, tmp_path: Path) -> None:
    _refused(
        tmp_path,
        tiny_sd_artifact,
        lambda d: d.update(format_version=1),
        rf"reads formats 2 to {FORMAT_VERSION}: compile it again \(difforge compile",
    )


def test_format_2_manifests_still_read(tiny_sd_artifact: Path) -> None:
    data = json.loads((tiny_sd_artifact / "manifest.json").read_text(encoding="utf-8"))
    assert data["format_version"] == 3  # nothing in it needs format 4 (a token selection)
    data["format_version"] = 2  # format 3 only added fields
    assert Manifest.from_dict(data).components.keys() == {
        "text_encoder", "denoiser", "vae_decoder"
    }
