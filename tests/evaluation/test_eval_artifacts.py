"""``difforge eval`` on a text-to-image artifact: agreement, and a difference it must catch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from difforge import api
from difforge.errors import DifforgeError


def test_tiny_sd_engine_matches_its_pytorch_source(tiny_sd_artifact: Path) -> None:
    report = api.evaluate(tiny_sd_artifact, images=2, steps=4)
    assert report.worst_psnr >= 40.0 and report.worst_ssim > 0.99
    assert report.quality is None  # random weights: no digit metrics
    assert [i.label for i in report.images] == ["'a photo of a cat'"] * 2


def test_a_perturbed_source_is_caught(
    tiny_sd_artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from difforge.evaluation.torch_runner import TorchRunner

    original = TorchRunner._infer

    def perturbed(self: TorchRunner, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = original(self, feeds)
        if self.name == "vae_decoder":
            out["image"] = out["image"] + 0.2
        return out

    monkeypatch.setattr(TorchRunner, "_infer", perturbed)
    report = api.evaluate(tiny_sd_artifact, images=1, steps=2)
    assert report.worst_psnr < 30.0


def test_digit_metrics_need_a_digits_model(tiny_sd_artifact: Path) -> None:
    with pytest.raises(DifforgeError, match="digits reference model"):
        api.evaluate(tiny_sd_artifact, images=1, steps=1, quality_samples=10)
    with pytest.raises(DifforgeError, match="--images"):
        api.evaluate(tiny_sd_artifact, images=0)
