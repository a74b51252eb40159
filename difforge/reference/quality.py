"""Scoring generated digits: the judge's class accuracy and FD against the test split."""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
import torch

from difforge.reference.data import NUM_CLASSES, load_digits_split
from difforge.reference.judge import Judge, load_judge
from difforge.reference.metrics import class_accuracy, frechet_distance, judge_features

#: FD is computed from at least this many samples (fewer inflate it).
MIN_FD_SAMPLES = 1000


@dataclass(frozen=True)
class Quality:
    accuracy: float
    fd: float
    samples: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def balanced_labels(count: int) -> torch.Tensor:
    """0, 1, …, 9, 0, 1, … : every class equally often (up to one)."""
    return torch.arange(count) % NUM_CLASSES


@functools.lru_cache(maxsize=2)
def _reference_features(judge_dir: str | None) -> tuple[Judge, np.ndarray]:
    judge = load_judge(judge_dir)
    return judge, judge_features(judge, load_digits_split().test_images)


def score(
    images: torch.Tensor | np.ndarray, labels: torch.Tensor, judge_dir: str | None = None
) -> Quality:
    """Accuracy and FD of images (N, 1, 32, 32) in [-1, 1] (or uint8 NHWC from the runtime)."""
    x = to_judge_input(images)
    judge, ref = _reference_features(judge_dir)
    acc = class_accuracy(judge, x, labels)
    fd = frechet_distance(judge_features(judge, x), ref)
    return Quality(accuracy=acc, fd=fd, samples=len(x))


def to_judge_input(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) runtime output or float NCHW in [-1, 1] -> float NCHW, 1 channel."""
    if isinstance(images, np.ndarray):
        if images.dtype == np.uint8:
            x = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)
        else:
            x = torch.from_numpy(np.asarray(images, dtype=np.float32))
    else:
        x = images.float()
    if x.shape[1] == 3:
        x = x.mean(dim=1, keepdim=True)
    return x.contiguous()
