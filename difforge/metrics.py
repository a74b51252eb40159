"""Error metrics shared by export verification, engine checks and comparisons (numpy only)."""

from __future__ import annotations

import numpy as np


def compare(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Max abs error and that error relative to the reference's largest magnitude.

    Relative to the largest magnitude rather than element-wise: element-wise relative error
    explodes wherever the reference crosses zero, which says nothing about the graph.
    """
    if ref.shape != got.shape:
        return {"max_abs": float("inf"), "max_rel": float("inf")}
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    max_abs = float(diff.max()) if diff.size else 0.0
    return {"max_abs": max_abs, "max_rel": max_abs / (scale or 1.0)}
