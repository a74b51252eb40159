"""scikit-learn's handwritten digits as 32×32 images in [-1, 1], with a fixed stratified split."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from difforge.errors import DifforgeError

RESOLUTION = 32
NUM_CLASSES = 10
TEST_FRACTION = 0.2
SPLIT_SEED = 0


@dataclass(frozen=True)
class DigitsSplit:
    """Images (N, 1, 32, 32) float32 in [-1, 1] and labels (N,) int64, train and test."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DifforgeError(
            "the digits reference data need scikit-learn: pip install scikit-learn"
        ) from exc
    bunch = load_digits()
    return np.asarray(bunch.images, dtype=np.float32), np.asarray(bunch.target, dtype=np.int64)


def upscale(images: np.ndarray, resolution: int = RESOLUTION) -> torch.Tensor:
    """8×8 digits with values 0..16 -> (N, 1, resolution, resolution) in [-1, 1], bilinear."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return (x * 2.0 - 1.0).clamp(-1.0, 1.0).contiguous()


def split_indices(
    labels: np.ndarray, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """A stratified split: per class, a seeded permutation; the first round(n·f) go to test."""
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_test = round(len(idx) * test_fraction)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@functools.lru_cache(maxsize=4)
def load_digits_split(
    resolution: int = RESOLUTION, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED
) -> DigitsSplit:
    """The fixed train/test split (80/20 stratified, seed 0 by default); cached per arguments."""
    images, labels = _sklearn_digits()
    train_idx, test_idx = split_indices(labels, test_fraction, seed)
    x = upscale(images, resolution)
    y = torch.from_numpy(labels)
    return DigitsSplit(x[train_idx], y[train_idx], x[test_idx], y[test_idx])
