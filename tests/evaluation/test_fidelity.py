"""PSNR and SSIM against their definitions, written out independently here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from difforge.evaluation.fidelity import IDENTICAL_PSNR, psnr, ssim


def _ssim_brute_force(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Per-pixel loops over an explicit 11x11 Gaussian window (σ 1.5, reflect padding),
    averaged over the interior (5 px border cropped)."""
    g = np.exp(-(np.arange(-5, 6) ** 2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    x = np.pad(a.astype(np.float64), 5, mode="symmetric")
    y = np.pad(b.astype(np.float64), 5, mode="symmetric")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    h, w = a.shape
    vals = []
    for i in range(5, h - 5):
        for j in range(5, w - 5):
            px = x[i : i + 11, j : j + 11]
            py = y[i : i + 11, j : j + 11]
            mx, my = (window * px).sum(), (window * py).sum()
            vx = (window * (px - mx) ** 2).sum()
            vy = (window * (py - my) ** 2).sum()
            cxy = (window * (px - mx) * (py - my)).sum()
            vals.append(
                ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
            )
    return float(np.mean(vals))


def test_ssim_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (24, 20)).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-30, 31, a.shape), 0, 255).astype(np.uint8)
    assert ssim(a, b) == pytest.approx(_ssim_brute_force(a, b), abs=1e-9)


def test_ssim_identical_is_one_and_channels_average() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
    assert ssim(a, a) == pytest.approx(1.0)
    b = a.copy()
    b[..., 0] = 255 - b[..., 0]
    per_channel = [ssim(a[..., c], b[..., c]) for c in range(3)]
    assert ssim(a, b) == pytest.approx(np.mean(per_channel))
    assert per_channel[0] < 0.5 < per_channel[1] == pytest.approx(1.0)


def test_psnr_definition() -> None:
    a = np.zeros((4, 4), np.uint8)
    b = a.copy()
    b[0, 0] = 16  # mse = 256 / 16 = 16
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 16))
    assert psnr(a, a) == IDENTICAL_PSNR
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(a, np.zeros((4, 5), np.uint8))
