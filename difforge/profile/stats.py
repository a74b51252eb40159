"""Summary statistics for timing samples and power-law fits for resolution sweeps."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/min/max/mean and the quartiles of ``samples`` (seconds in, seconds out)."""
    if not samples:
        raise ValueError("no samples to summarize")
    arr = np.asarray(samples, dtype=np.float64)
    q = np.percentile(arr, [10, 25, 50, 75, 90, 99])
    return {
        "n": int(arr.size),
        "min": float(arr.min()),
        "p10": float(q[0]),
        "p25": float(q[1]),
        "p50": float(q[2]),
        "p75": float(q[3]),
        "p90": float(q[4]),
        "p99": float(q[5]),
        "max": float(arr.max()),
        "mean": float(arr.mean()),
    }


def growth_exponent(sizes: Sequence[float], values: Sequence[float]) -> float | None:
    """Least-squares slope of log(value) against log(size): value ∝ size^k.

    ``None`` when fewer than two distinct positive points exist.
    """
    pts = [(s, v) for s, v in zip(sizes, values, strict=True) if s > 0 and v > 0]
    if len({s for s, _ in pts}) < 2:
        return None
    x = np.log([s for s, _ in pts])
    y = np.log([v for _, v in pts])
    slope = float(np.polyfit(x, y, 1)[0])
    return slope if math.isfinite(slope) else None
