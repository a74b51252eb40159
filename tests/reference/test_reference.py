"""The digits data split, the shipped judge and the offline quality metrics (issue 6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

from difforge.reference import (
    class_accuracy,
    frechet_distance,
    judge_features,
    load_digits_split,
    load_judge,
)
from difforge.reference.data import split_indices
from difforge.reference.judge import DEFAULT_DIR, Judge, load_card


@pytest.fixture(scope="module")
def judge() -> Judge:
    if not (DEFAULT_DIR / "model.safetensors").is_file():
        pytest.skip("models/judge/ not shipped in this checkout")
    return load_judge()


def test_split_is_deterministic_stratified_and_disjoint() -> None:
    split = load_digits_split()
    assert split.train_images.shape[1:] == (1, 32, 32)
    assert split.train_images.dtype == torch.float32
    lo = min(split.train_images.min().item(), split.test_images.min().item())
    hi = max(split.train_images.max().item(), split.test_images.max().item())
    assert lo >= -1.0 and hi <= 1.0
    assert len(split.train_labels) + len(split.test_labels) == 1797
    labels = np.concatenate([split.train_labels.numpy(), split.test_labels.numpy()])
    train_a, test_a = split_indices(labels)
    train_b, test_b = split_indices(labels)
    assert np.array_equal(train_a, train_b) and np.array_equal(test_a, test_b)
    assert not set(train_a.tolist()) & set(test_a.tolist())
    # Every class is ~20% test.
    test_counts = np.bincount(split.test_labels.numpy(), minlength=10)
    train_counts = np.bincount(split.train_labels.numpy(), minlength=10)
    fractions = test_counts / (test_counts + train_counts)
    assert np.all(np.abs(fractions - 0.2) < 0.01), fractions
    # A different seed gives a different split.
    _, test_c = split_indices(labels, seed=1)
    assert not np.array_equal(test_a, test_c)


def test_shipped_judge_matches_card(judge: Judge) -> None:
    split = load_digits_split()
    acc = class_accuracy(judge, split.test_images, split.test_labels)
    assert acc >= 0.97
    card = load_card()
    metrics = card["metrics"]
    assert isinstance(metrics, dict)
    assert abs(acc - float(metrics["test_accuracy"])) <= 0.005
    assert (DEFAULT_DIR / "model.safetensors").stat().st_size <= 1_000_000
    assert judge.features(split.test_images[:4]).shape == (4, 64)


def test_frechet_distance_self_zero_and_grows_with_corruption(judge: Judge) -> None:
    test = load_digits_split().test_images
    feats = judge_features(judge, test)
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)
    gen = torch.Generator().manual_seed(0)
    noised = (test + 0.5 * torch.randn(test.shape, generator=gen)).clamp(-1, 1)
    shifted = torch.roll(test, shifts=(6, 6), dims=(2, 3))
    fd_noise = frechet_distance(feats, judge_features(judge, noised))
    fd_shift = frechet_distance(feats, judge_features(judge, shifted))
    fd_light = frechet_distance(
        feats, judge_features(judge, (test + 0.1 * torch.randn(test.shape, generator=gen)))
    )
    assert fd_noise > fd_light > 0.0
    assert fd_shift > fd_light


def test_frechet_distance_on_gaussians_matches_closed_form() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, size=(4000, 3))
    b = rng.normal(2.0, 1.0, size=(4000, 3))
    # Same covariance (identity), means 2 apart per dim: FD ≈ 3 · 2² = 12.
    assert frechet_distance(a, b) == pytest.approx(12.0, rel=0.05)
    # Rank-deficient features (a dead unit) stay finite.
    dead = a.copy()
    dead[:, 0] = 0.0
    assert np.isfinite(frechet_distance(dead, dead))
    with pytest.raises(ValueError):
        frechet_distance(a, b[:, :2])


def test_class_accuracy_on_labelled_inputs(judge: Judge) -> None:
    split = load_digits_split()
    images, labels = split.test_images[:100], split.test_labels[:100]
    assert class_accuracy(judge, images, labels) >= 0.9
    wrong = (labels + 1) % 10
    assert class_accuracy(judge, images, wrong) <= 0.1
    half = torch.where(torch.arange(100) < 50, labels, wrong)
    assert class_accuracy(judge, images, half) == pytest.approx(0.5, abs=0.06)
    with pytest.raises(ValueError):
        class_accuracy(judge, images, labels[:10])


def test_class_accuracy_with_a_rigged_judge() -> None:
    """Accuracy counts argmax == intended, independently of trained weights."""
    model = Judge()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.head.bias.copy_(torch.arange(10, dtype=torch.float32))  # always predicts 9
    images = torch.zeros(8, 1, 32, 32)
    labels = torch.tensor([9, 9, 9, 1, 2, 3, 4, 9])
    assert class_accuracy(model, images, labels) == pytest.approx(0.5)
