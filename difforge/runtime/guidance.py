"""Guidance combines for patched denoisers, in numpy only (the runtime imports no torch).

``ndcfg`` is ScaleCrafter's noise-damped classifier-free guidance: the unconditional
prediction comes from a weakly re-dilated pass, the guidance direction from the strongly
re-dilated one (``text2image.py``: ``noise_pred_vanilla + w * (noise_pred_text -
noise_pred_uncond)``, where ``noise_pred_vanilla`` is the uncond half of the weak pass).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["cfg", "ndcfg", "variant_at"]


def ndcfg(
    eps_weak_uncond: npt.ArrayLike,
    eps_strong_uncond: npt.ArrayLike,
    eps_strong_cond: npt.ArrayLike,
    w: float,
) -> np.ndarray:
    """eps_weak(x, 0) + w * (eps_strong(x, c) - eps_strong(x, 0))."""
    weak = np.asarray(eps_weak_uncond)
    strong_u = np.asarray(eps_strong_uncond)
    strong_c = np.asarray(eps_strong_cond)
    if not (weak.shape == strong_u.shape == strong_c.shape):
        raise ValueError(f"ndcfg: shapes differ: {weak.shape}, {strong_u.shape}, {strong_c.shape}")
    return weak + w * (strong_c - strong_u)


def cfg(eps_uncond: npt.ArrayLike, eps_cond: npt.ArrayLike, w: float) -> np.ndarray:
    """Standard classifier-free guidance (what ndcfg falls back to outside its steps)."""
    return ndcfg(eps_uncond, eps_uncond, eps_cond, w)


def variant_at(rules: Sequence[Mapping[str, Any]], default: str, step: int, num_steps: int) -> str:
    """The variant a step runs: the first rule with int(from*N) <= step < int(to*N), else
    ``default`` (a patch's first variant). This is the contract patches write rules for."""
    for rule in rules:
        lo = int(float(rule["from"]) * num_steps)
        hi = int(float(rule["to"]) * num_steps)
        if lo <= step < hi:
            return str(rule["variant"])
    return default
