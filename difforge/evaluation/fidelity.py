"""Image fidelity: PSNR and SSIM of uint8 images (NumPy/SciPy, no torch)."""

from __future__ import annotations

import math

import numpy as np

#: PSNR reported for identical images (the value is infinite); above any real result.
IDENTICAL_PSNR = 100.0


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB; :data:`IDENTICAL_PSNR` when ``a == b``."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return IDENTICAL_PSNR
    return min(IDENTICAL_PSNR, 10.0 * math.log10(data_range**2 / mse))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Mean SSIM (Wang et al. 2004) of two (H, W) or (H, W, C) images.

    Gaussian window σ = 1.5 truncated at 3.5σ (11 taps), K1 = 0.01, K2 = 0.03, population
    covariances: scikit-image's ``structural_similarity(gaussian_weights=True,
    use_sample_covariance=False)``. Channels are averaged.
    """
    from scipy.ndimage import gaussian_filter

    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    x = a.astype(np.float64)
    y = b.astype(np.float64)
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    scores = []
    for ch in range(x.shape[-1]):
        xc, yc = x[..., ch], y[..., ch]

        def blur(img: np.ndarray) -> np.ndarray:
            return np.asarray(gaussian_filter(img, sigma=1.5, truncate=3.5, mode="reflect"))

        mu_x, mu_y = blur(xc), blur(yc)
        var_x = blur(xc * xc) - mu_x**2
        var_y = blur(yc * yc) - mu_y**2
        cov = blur(xc * yc) - mu_x * mu_y
        num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
        den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
        # Crop the border (half the window) as scikit-image does before averaging.
        pad = 5
        smap = num / den
        if smap.shape[0] > 2 * pad and smap.shape[1] > 2 * pad:
            smap = smap[pad:-pad, pad:-pad]
        scores.append(float(smap.mean()))
    return float(np.mean(scores))
