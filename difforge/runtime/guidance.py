"""Guidance: how a step's denoiser outputs combine into one prediction (numpy only).

Classifier-free guidance follows each pipeline's batch order: text-to-image runs
[unconditional, text] (``StableDiffusionPipeline``), class-to-image [class, null]
(``DiTPipeline``). ``ndcfg`` is ScaleCrafter's noise-damped classifier-free guidance: the
unconditional prediction comes from a weakly re-dilated pass, the guidance direction from the
strongly re-dilated one (``text2image.py``: ``noise_pred_vanilla + w * (noise_pred_text -
noise_pred_uncond)``, where ``noise_pred_vanilla`` is the uncond half of the weak pass).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["cfg", "combine", "ndcfg"]


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


def combine(eps: np.ndarray, scale: float, uncond_first: bool) -> np.ndarray:
    """One guided prediction from a CFG-doubled batch, in the pipeline's order:
    [uncond, text] when ``uncond_first``, else [class, null]."""
    first, second = np.split(eps, 2)
    if uncond_first:
        return first + scale * (second - first)
    return second + scale * (first - second)
