"""The ONNX Runtime runner: made from the artifact's engine record, checked before it runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from difforge.artifact.feeds import sample_feeds
from difforge.errors import DifforgeError
from difforge.runtime import load
from difforge.runtime.runners.ort import OrtRunner


def test_runner_applies_recorded_settings_and_overrides(tiny_sd_artifact: Path) -> None:
    pipe = load(tiny_sd_artifact, lazy=True)
    runner = pipe.runners["denoiser"]
    assert isinstance(runner, OrtRunner) and not runner.active
    assert runner.providers == ["CPUExecutionProvider"]
    assert runner.settings["graph_optimization_level"] == "all"
    assert "providers" not in runner.settings  # a session option, not a setting
    one = load(tiny_sd_artifact, threads=1, lazy=True).runners["denoiser"]
    assert isinstance(one, OrtRunner) and one.settings["intra_op_num_threads"] == 1
    feeds = sample_feeds(pipe.manifest.components["denoiser"], "min")
    out = runner.infer(feeds)
    assert runner.active and runner.load_seconds > 0
    assert out["noise_pred"].shape == feeds["sample"].shape


def test_feeds_are_checked_against_the_interface(tiny_sd_artifact: Path) -> None:
    pipe = load(tiny_sd_artifact, lazy=True)
    entry = pipe.manifest.components["denoiser"]
    runner = pipe.runners["denoiser"]
    good = sample_feeds(entry, "opt")
    cases = [
        ({**good, "sample": good["sample"].astype(np.float64)}, "dtype float64"),
        ({**good, "sample": good["sample"][0]}, "rank 3, expected 4"),
        ({k: v for k, v in good.items() if k != "timestep"}, "do not match"),
        ({**good, "timestep": good["timestep"][:1]}, "axis 'batch' is 2 in one input and 1"),
    ]
    hi = entry.axes["height"][2]
    big = np.zeros((2, 4, hi + 8, hi + 8), np.float32)
    cases.append(({**good, "sample": big}, "outside the range this artifact was built for"))
    for feeds, match in cases:
        with pytest.raises(DifforgeError, match=match):
            runner.check_feeds(feeds)
    assert not runner.active  # refused before any session was made


def test_an_artifact_is_judged_by_the_ops_it_needs(
    tiny_sd_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Jetson's ONNX Runtime lags behind: an artifact built by a newer one runs if this one
    has every op its graphs use, and is refused naming the ops it lacks."""
    from onnxruntime.capi import onnxruntime_pybind11_state as core

    copy = tmp_path / "art"
    shutil.copytree(tiny_sd_artifact, copy)
    data = json.loads((copy / "manifest.json").read_text())
    requires = data["components"]["denoiser"]["engine"]["requires"]
    assert requires["opsets"]["ai.onnx"] >= 17 and "com.microsoft::MultiHeadAttention" in (
        requires["ops"]
    ), requires
    data["versions"]["onnxruntime"] = "99.0.0"  # built by a newer runtime: still runs here
    (copy / "manifest.json").write_text(json.dumps(data))
    assert load(copy, lazy=True).runners
    every = core.get_all_operator_schema()
    monkeypatch.setattr(core, "get_all_operator_schema",
                        lambda: [s for s in every if s.name != "MultiHeadAttention"])
    lacking = r"needs com\.microsoft::MultiHeadAttention \(opset 1\)"
    with pytest.raises(DifforgeError, match=lacking):
        load(copy, lazy=True)
    monkeypatch.setattr(core, "get_all_operator_schema", lambda: every)
    # an artifact without the record falls back to the version rule
    for component in data["components"].values():
        component["engine"].pop("requires", None)
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(DifforgeError, match=r"built with onnxruntime 99\.0\.0"):
        load(copy)
    data["versions"]["onnxruntime"] = "1.0.0"  # older builds run on newer runtimes
    (copy / "manifest.json").write_text(json.dumps(data))
    assert load(copy, lazy=True).runners


def test_providers_are_chosen_by_device_or_name(
    tiny_sd_artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--device``/``--provider`` replace the recorded providers (ONNX Runtime artifacts),
    in order, each checked against this onnxruntime."""
    import onnxruntime as ort

    from difforge.runtime.runners._ort_settings import DEVICES

    cpu = load(tiny_sd_artifact, lazy=True, providers=["CPUExecutionProvider"])
    assert all(r.providers == ["CPUExecutionProvider"] for r in cpu.runners.values())  # type: ignore[attr-defined]
    with pytest.raises(DifforgeError, match=r"no CUDAExecutionProvider; it has .*onnxruntime-gpu"):
        load(tiny_sd_artifact, lazy=True, providers=DEVICES["cuda"])
    with pytest.raises(DifforgeError, match="non-empty list"):
        load(tiny_sd_artifact, lazy=True, providers=[])
    # where onnxruntime-gpu is installed, the session gets the providers in the order given
    gpu = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: gpu)
    seen: list[list[str]] = []

    class Session:
        def __init__(self, path: str, sess_options: object, providers: list[str]) -> None:
            seen.append(providers)

        def get_outputs(self) -> list[object]:
            return []

    monkeypatch.setattr(ort, "InferenceSession", Session)
    load(tiny_sd_artifact, providers=DEVICES["cuda"])
    assert seen and all(p == gpu for p in seen)


def test_device_choice_on_the_command_line(tiny_sd_artifact: Path, tmp_path: Path) -> None:
    from tests.cli.test_errors import assert_user_error, difforge

    out = str(tmp_path / "x.png")
    done = difforge("run", str(tiny_sd_artifact), "--prompt", "a", "--steps", "1", "--device",
                    "cuda", "--out", out)
    assert_user_error(done, "no CUDAExecutionProvider")
    both = difforge("run", str(tiny_sd_artifact), "--prompt", "a", "--device", "cpu",
                    "--provider", "CPUExecutionProvider", "--out", out)
    assert_user_error(both, "give one")
    ok = difforge("run", str(tiny_sd_artifact), "--prompt", "a", "--steps", "1", "--device",
                  "cpu", "--out", out, "-q")
    assert ok.returncode == 0, ok.stderr
