"""Trained reference models and an offline image-quality metric (issue 6).

The data are scikit-learn's bundled handwritten digits (no download), upscaled to 32×32; the
judge is a small CNN classifier whose accuracy on generated samples and whose penultimate
features (for a Fréchet distance against the test split) measure what a generator makes.
"""

from __future__ import annotations

from difforge.reference.data import DigitsSplit, load_digits_split
from difforge.reference.judge import Judge, load_judge, train_judge
from difforge.reference.metrics import class_accuracy, frechet_distance, judge_features

__all__ = [
    "DigitsSplit",
    "Judge",
    "class_accuracy",
    "frechet_distance",
    "judge_features",
    "load_digits_split",
    "load_judge",
    "train_judge",
]
