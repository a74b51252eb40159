"""``eval --against``: a lowered artifact compared with its fp32 build, and the digits gate."""

from __future__ import annotations

from pathlib import Path

import pytest

from difforge import BuildConfig, PrecisionConfig, build
from difforge.errors import DifforgeError
from difforge.evaluation.run import DIGITS_GATE, digits_gate, evaluate


def test_a_lowered_build_against_its_fp32_build(
    tiny_sd_calibrated: Path, tiny_sd_artifact: Path, tmp_path: Path
) -> None:
    fp16 = build(
        BuildConfig(
            source=tiny_sd_calibrated,
            output=tmp_path / "fp16",
            precision=PrecisionConfig(roles={"vae_decoder": "fp16"}),
        )
    )
    report = evaluate(fp16, images=2, steps=4, against=tiny_sd_artifact)
    assert report.against == str(tiny_sd_artifact)
    assert 30 < report.worst_psnr < 100  # close, and not the same engine
    assert report.quality is None and report.quality_gate is None  # not a digits model
    same = evaluate(tiny_sd_artifact, images=1, steps=4, against=tiny_sd_artifact)
    assert same.worst_psnr == 100.0


def test_another_model_is_refused(tiny_sd_artifact: Path, tiny_dit_artifact: Path) -> None:
    with pytest.raises(DifforgeError, match="is not a build of the same model"):
        evaluate(tiny_sd_artifact, images=1, against=tiny_dit_artifact)


def test_the_digits_gate() -> None:
    ref = {"accuracy": 0.97, "fd": 16.0}
    assert digits_gate({"accuracy": 0.96, "fd": 17.0}, ref)["passed"]
    assert not digits_gate({"accuracy": 0.94, "fd": 17.0}, ref)["passed"]  # -3 points
    worse = digits_gate({"accuracy": 0.97, "fd": 16.0 * 1.2}, ref)
    assert not worse["passed"] and worse["fd_ratio"] == pytest.approx(1.2)
    assert DIGITS_GATE == {"max_accuracy_drop": 0.02, "max_fd_ratio": 1.15}
