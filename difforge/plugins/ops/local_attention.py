"""``difforge::local_attention_2d``: CLEAR / NATTEN-style 2-D local attention as one op.

Token layout: ``[T global | H*W image (row-major) | P pooled]`` (the pooled block only in k/v).
Global queries see every key except the pooled ones; image queries see all global keys, their
window of image keys and all pooled keys. See :mod:`difforge.plugins.neighbourhood`.

On CUDA tensors the op runs the Triton kernel when triton imports; everywhere else it runs
:func:`local_attention_2d_gather`, which is linear in memory (an index-table gather, no N x N
mask), or, for small grids, SDPA with the dense mask (:func:`local_attention_2d_masked`).
No annotations are postponed here: ``custom_op`` reads them to build the schema.
"""

import functools
from typing import Any

import torch
import torch.nn.functional as F

from difforge.plugins.attention_args import check_attention_args, resolve_scale
from difforge.plugins.kernels import triton_available
from difforge.plugins.neighbourhood import neighbour_table

# Elements of the gathered [B, heads, chunk, M, d] key block per step of the reference
# (larger on GPUs, where each step is cheap but Python's loop is not).
_GATHER_BUDGET = {"cpu": 1 << 24, "cuda": 1 << 27}


def local_attention_2d_gather(
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
    """Reference implementation: gathers each image query's window.

    Accumulates in fp32, or in fp64 for fp64 inputs (so float64 checks of the patches that
    use this op hold to ~1e-15, not to fp32's ~1e-7).
    """
    check_attention_args(q, k, v, height, width, num_global, radius, window, num_pooled)
    b, heads, n_q, d = q.shape
    t, hw = num_global, height * width
    s = resolve_scale(scale, d)
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    qf, kf, vf = q.to(acc), k.to(acc), v.to(acc)
    out = torch.empty(b, heads, n_q, d, dtype=acc, device=q.device)
    if t > 0:
        # Global rows are dense over global + image keys: T x (T+HW), linear in HW.
        logits = (qf[:, :, :t] @ kf[:, :, : t + hw].transpose(-1, -2)) * s
        out[:, :, :t] = torch.softmax(logits, dim=-1) @ vf[:, :, : t + hw]
    index, valid = neighbour_table(height, width, radius, window, q.device)
    m = index.shape[1]
    k_img, v_img = kf[:, :, t : t + hw], vf[:, :, t : t + hw]
    k_extra = torch.cat([kf[:, :, :t], kf[:, :, t + hw :]], dim=2)  # global + pooled keys
    v_extra = torch.cat([vf[:, :, :t], vf[:, :, t + hw :]], dim=2)
    budget = _GATHER_BUDGET.get(q.device.type, 1 << 24)
    chunk = max(1, budget // max(1, b * heads * m * d))
    for r0 in range(0, hw, chunk):
        r1 = min(hw, r0 + chunk)
        qc = qf[:, :, t + r0 : t + r1]
        kg = k_img[:, :, index[r0:r1]]  # [B, heads, c, M, d]
        vg = v_img[:, :, index[r0:r1]]
        local = torch.einsum("bhcd,bhcmd->bhcm", qc, kg) * s
        local = local.masked_fill(~valid[r0:r1], float("-inf"))
        extra = (qc @ k_extra.transpose(-1, -2)) * s
        p = torch.softmax(torch.cat([local, extra], dim=-1), dim=-1)
        o = torch.einsum("bhcm,bhcmd->bhcd", p[..., :m], vg) + p[..., m:] @ v_extra
        out[:, :, t + r0 : t + r1] = o
    return out.to(q.dtype)


# Up to this many query x key pairs, CPU runs one SDPA call with a materialised boolean mask
# (4 MiB): on small grids (a 16x16 DiT, training) that is ~5x faster than the gather loop.
_DENSE_MASK_LIMIT = 1 << 22


@functools.lru_cache(maxsize=32)
def _visibility_mask(
    height: int, width: int, num_global: int, radius: int, window: str, num_pooled: int
) -> torch.Tensor:
    """[T+HW, T+HW+P] bool: the op's visibility rule, built from the same index table."""
    t, hw = num_global, height * width
    mask = torch.zeros(t + hw, t + hw + num_pooled, dtype=torch.bool)
    mask[:t, : t + hw] = True
    mask[t:, :t] = True
    mask[t:, t + hw :] = True
    index, valid = neighbour_table(height, width, radius, window, torch.device("cpu"))
    rows = torch.arange(hw)[:, None].expand_as(index)
    mask[t + rows[valid], t + index[valid]] = True
    return mask


def local_attention_2d_masked(
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
    """Small-grid path: SDPA with the dense visibility mask, accumulating like the gather."""
    check_attention_args(q, k, v, height, width, num_global, radius, window, num_pooled)
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    mask = _visibility_mask(height, width, num_global, radius, window, num_pooled)
    out = F.scaled_dot_product_attention(
        q.to(acc),
        k.to(acc),
        v.to(acc),
        attn_mask=mask.to(q.device),
        scale=resolve_scale(scale, q.shape[-1]),
    )
    return out.to(q.dtype)


def _cpu_local_attention(*args: Any) -> torch.Tensor:
    q, k = args[0], args[1]
    if q.shape[2] * k.shape[2] <= _DENSE_MASK_LIMIT:
        return local_attention_2d_masked(*args)
    return local_attention_2d_gather(*args)


@torch.library.custom_op("difforge::local_attention_2d", mutates_args=())
def local_attention_2d(
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
    """Local 2-D attention; output shaped like ``q`` in ``q``'s dtype."""
    args = (q, k, v, height, width, num_global, radius, window, scale, num_pooled)
    if q.is_cuda and triton_available():
        from difforge.plugins.kernels.local_attention import (
            MAX_HEAD_DIM,
            local_attention_2d_triton,
        )

        if q.shape[-1] <= MAX_HEAD_DIM:
            return local_attention_2d_triton(*args)
    return _cpu_local_attention(*args)


@local_attention_2d.register_fake
def _local_attention_2d_fake(
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
    # Shapes may be symbolic under torch.export: no Python-level checks that would guard.
    return torch.empty_like(q, memory_format=torch.contiguous_format)


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    q, k, v, *rest = inputs
    ctx.save_for_backward(q, k, v)
    ctx.rest = tuple(rest)


def _backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    # Gradients come from the CPU path re-run under autograd: training (CLEAR's
    # attention distillation) needs them; a fused backward kernel would only be faster.
    q, k, v = ctx.saved_tensors
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(t.requires_grad) for t in (q, k, v)]
        wanted = [t for t in leaves if t.requires_grad]
        out = _cpu_local_attention(*leaves, *ctx.rest)
        grads = iter(torch.autograd.grad(out, wanted, grad) if wanted else ())
    return tuple(next(grads) if t.requires_grad else None for t in leaves) + (None,) * 7


local_attention_2d.register_autograd(_backward, setup_context=_setup_context)
