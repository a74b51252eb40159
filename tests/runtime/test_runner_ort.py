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


def test_an_engine_from_a_newer_onnxruntime_is_refused(
    tiny_sd_artifact: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "art"
    shutil.copytree(tiny_sd_artifact, copy)
    data = json.loads((copy / "manifest.json").read_text())
    data["versions"]["onnxruntime"] = "99.0.0"
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(DifforgeError, match=r"built with onnxruntime 99\.0\.0"):
        load(copy)
    data["versions"]["onnxruntime"] = "1.0.0"  # older builds run on newer runtimes
    (copy / "manifest.json").write_text(json.dumps(data))
    assert load(copy, lazy=True).runners
