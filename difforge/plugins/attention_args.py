"""Argument checks shared by every implementation of ``difforge::local_attention_2d``."""

from __future__ import annotations

import math

import torch

from difforge.errors import DifforgeError
from difforge.plugins.neighbourhood import check_window


def check_attention_args(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    height: int,
    width: int,
    num_global: int,
    radius: int,
    window: str,
    num_pooled: int,
) -> None:
    """Raise :class:`DifforgeError` when the tensors do not match the token layout."""
    check_window(window, radius)
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise DifforgeError("local attention expects q, k, v shaped [batch, heads, tokens, dim]")
    if height < 1 or width < 1 or num_global < 0 or num_pooled < 0:
        raise DifforgeError(
            f"bad local attention layout: H={height} W={width} T={num_global} P={num_pooled}"
        )
    n_q = num_global + height * width
    if q.shape[2] != n_q:
        raise DifforgeError(
            f"q has {q.shape[2]} tokens, expected T + H*W = {num_global} + {height}*{width}"
        )
    if k.shape != v.shape or k.shape[2] != n_q + num_pooled:
        raise DifforgeError(
            f"k/v shaped {tuple(k.shape)}/{tuple(v.shape)}, expected {n_q + num_pooled} tokens"
        )
    if k.shape[:2] != q.shape[:2] or k.shape[3] != q.shape[3]:
        raise DifforgeError("q, k, v must share batch, heads and head dim")
    if not (q.dtype == k.dtype == v.dtype) or not q.is_floating_point():
        dtypes = f"{q.dtype}/{k.dtype}/{v.dtype}"
        raise DifforgeError(f"q, k, v must share one float dtype, got {dtypes}")


def resolve_scale(scale: float, head_dim: int) -> float:
    """``scale <= 0`` means the usual ``1/sqrt(d)``."""
    return scale if scale > 0 else 1.0 / math.sqrt(head_dim)
