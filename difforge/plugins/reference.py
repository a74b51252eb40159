"""Dense references: quadratic memory, float64, for tests and benchmarks only.

Independent of the index tables in :mod:`difforge.plugins.neighbourhood`: the visibility
predicate is written out again from its definition and materialised as an N x N mask.
"""

from __future__ import annotations

import torch

from difforge.plugins.attention_args import resolve_scale


def _axis_visible(q: torch.Tensor, k: torch.Tensor, length: int, radius: int) -> torch.Tensor:
    """NATTEN square window along one axis, written the way METHODS.md §9 states it."""
    kernel = 2 * radius + 1
    if length < kernel:
        # The window cannot fit: it covers the whole axis.
        return torch.ones(q.shape[0], k.shape[1], dtype=torch.bool, device=q.device)
    left = kernel // 2
    right = kernel // 2 + (kernel % 2 - 1)
    centre = q.clamp(min=left, max=length - 1 - right)
    return (k >= centre - left) & (k <= centre + right)


def dense_mask(
    height: int,
    width: int,
    num_global: int,
    radius: int,
    window: str,
    num_pooled: int,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Boolean ``[T+HW, T+HW+P]`` mask: True where query row may attend to key column."""
    t, hw, p = num_global, height * width, num_pooled
    n_q, n_k = t + hw, t + hw + p
    mask = torch.zeros(n_q, n_k, dtype=torch.bool, device=device)
    pix = torch.arange(hw, device=device, dtype=torch.int32)
    ky, kx = (pix // width).view(1, -1), (pix % width).view(1, -1)
    # Row chunks keep the integer intermediates small when the grid is large.
    chunk = max(1, (1 << 26) // max(hw, 1))
    for r0 in range(0, hw, chunk):
        rows = pix[r0 : r0 + chunk]
        qy, qx = (rows // width).view(-1, 1), (rows % width).view(-1, 1)
        if window == "disc":
            local = (qy - ky) ** 2 + (qx - kx) ** 2 < radius**2
        elif window == "square":
            local = _axis_visible(qy, ky, height, radius) & _axis_visible(qx, kx, width, radius)
        else:
            raise ValueError(window)
        mask[t + r0 : t + r0 + rows.shape[0], t : t + hw] = local
    mask[:, :t] = True  # every query sees the global (text) keys
    mask[:t, : t + hw] = True  # global queries see every key except pooled ones
    mask[t:, t + hw :] = True  # image queries see every pooled key
    return mask


def local_attention_2d_dense(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    height: int,
    width: int,
    num_global: int,
    radius: int,
    window: str,
    scale: float,
    num_pooled: int,
) -> torch.Tensor:
    """Softmax attention under :func:`dense_mask`, in float64; returns float64."""
    mask = dense_mask(height, width, num_global, radius, window, num_pooled, q.device)
    s = resolve_scale(scale, q.shape[-1])
    logits = (q.double() @ k.double().transpose(-1, -2)) * s
    logits = logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, dim=-1) @ v.double()
