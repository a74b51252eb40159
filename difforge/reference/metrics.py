"""Offline quality metrics on generated digits: the judge's class accuracy and a Fréchet distance.

FD here is FID's formula on the judge's 64-dim penultimate features instead of Inception's,
so its values are comparable only with other FDs from the same shipped judge.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from difforge.reference.judge import Judge, predict


@torch.no_grad()
def judge_features(model: Judge, images: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """Penultimate features (N, 64) float64 of images (N, 1, 32, 32) in [-1, 1]."""
    model.eval()
    feats = [model.features(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return torch.cat(feats).double().numpy()


def class_accuracy(model: Judge, images: torch.Tensor, intended: torch.Tensor) -> float:
    """Fraction of images the judge classifies as their intended class."""
    if len(images) != len(intended):
        raise ValueError(f"{len(images)} images but {len(intended)} labels")
    if len(images) == 0:
        raise ValueError("no images")
    return float((predict(model, images) == intended.to(torch.int64)).double().mean())


def _stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need (N>=2, D) features, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray, eps: float = 1e-6) -> float:
    """‖μa − μb‖² + Tr(Σa + Σb − 2·(Σa Σb)^½), real part, clamped at 0.

    If sqrtm of the product warns or is not finite (near-singular covariances, e.g. dead
    ReLU units), both covariances get ``eps`` on the diagonal (in every term) and it is
    recomputed, as in pytorch-fid.
    """
    from scipy import linalg

    mu_a, cov_a = _stats(features_a)
    mu_b, cov_b = _stats(features_b)
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"feature dimensions differ: {mu_a.shape[0]} vs {mu_b.shape[0]}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        covmean = linalg.sqrtm(cov_a @ cov_b)
    if caught or not np.isfinite(covmean).all():
        offset = np.eye(cov_a.shape[0]) * eps
        cov_a, cov_b = cov_a + offset, cov_b + offset
        covmean = linalg.sqrtm(cov_a @ cov_b)
    covmean = np.real(covmean)
    diff = mu_a - mu_b
    fd = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))
    return max(fd, 0.0)
