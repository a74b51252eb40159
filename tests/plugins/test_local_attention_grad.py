"""The local-attention op's small-grid (dense mask) path and its gradients (CLEAR training)."""

from __future__ import annotations

import pytest
import torch

from difforge.plugins.ops import local_attention as la
from difforge.plugins.reference import local_attention_2d_dense

CASES = [
    # height, width, global tokens, radius, window, pooled keys
    (5, 6, 3, 2, "disc", 0),
    (7, 4, 0, 3, "square", 0),
    (8, 8, 2, 2, "disc", 4),
    (1, 9, 1, 1, "square", 0),
]


def _inputs(h: int, w: int, t: int, p: int, dtype: torch.dtype) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(h * 100 + w)
    n = t + h * w
    shapes = [(2, 2, n, 8), (2, 2, n + p, 8), (2, 2, n + p, 8)]
    return [torch.randn(s, generator=gen, dtype=dtype).requires_grad_() for s in shapes]


@pytest.mark.parametrize(("h", "w", "t", "r", "window", "p"), CASES)
def test_masked_path_matches_gather(h: int, w: int, t: int, r: int, window: str, p: int) -> None:
    q, k, v = _inputs(h, w, t, p, torch.float64)
    args = (h, w, t, r, window, 0.0, p)
    masked = la.local_attention_2d_masked(q, k, v, *args)
    gather = la.local_attention_2d_gather(q, k, v, *args)
    torch.testing.assert_close(masked, gather, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("force_gather", [False, True])
@pytest.mark.parametrize(("h", "w", "t", "r", "window", "p"), CASES)
def test_gradients_match_dense_reference(
    monkeypatch: pytest.MonkeyPatch,
    force_gather: bool,
    h: int,
    w: int,
    t: int,
    r: int,
    window: str,
    p: int,
) -> None:
    if force_gather:
        monkeypatch.setattr(la, "_DENSE_MASK_LIMIT", 0)
    q, k, v = _inputs(h, w, t, p, torch.float64)
    args = (h, w, t, r, window, 0.0, p)
    grad_out = torch.randn(q.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = torch.autograd.grad(la.local_attention_2d(q, k, v, *args), (q, k, v), grad_out)
    ref = torch.autograd.grad(local_attention_2d_dense(q, k, v, *args), (q, k, v), grad_out)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_gradient_only_for_inputs_that_need_it() -> None:
    q, k, v = _inputs(4, 4, 0, 0, torch.float32)
    k = k.detach()
    out = la.local_attention_2d(q, k, v, 4, 4, 0, 2, "disc", 0.0, 0)
    out.sum().backward()
    assert q.grad is not None and v.grad is not None
    assert k.grad is None
