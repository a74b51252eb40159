"""Entry point of the Triton ``difforge::local_attention_2d`` kernels, and their launch.

:func:`local_attention_2d_triton` checks the arguments, picks the tiles (forced, autotuned
once per shape on CUDA, or the default) and launches the programs of
:mod:`.local_attention_kernels` on their grids. The pieces live in:

* :mod:`.local_attention_blocks`: the ``@triton.jit`` device helpers (softmax step, schedules);
* :mod:`.local_attention_kernels`: the image-query, global-query and split-merge programs;
* :mod:`.local_attention_tiles`: :class:`AttentionTiles`, the autotuning candidates, results.

Their public names (and the programs) stay importable from here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import triton

from difforge.errors import DifforgeError
from difforge.plugins.attention_args import check_attention_args, resolve_scale
from difforge.plugins.kernels import autotune_enabled, interpreting, pick_fastest
from difforge.plugins.kernels.key_blocks import key_block_lists
from difforge.plugins.kernels.local_attention_kernels import (
    _global_query_kernel,
    _image_query_kernel,
    _merge_splits_kernel,
)
from difforge.plugins.kernels.local_attention_tiles import (
    SCHEDULES,
    TILE_CANDIDATES,
    TIMINGS,
    TUNED,
    AttentionTiles,
)

__all__ = [
    "MAX_HEAD_DIM",
    "MAX_LIST_EXTENT",
    "SCHEDULES",
    "TILE_CANDIDATES",
    "TIMINGS",
    "TUNED",
    "AttentionTiles",
    "local_attention_2d_triton",
    "tuning_key",
]

_LOG2E = 1.4426950408889634
# Larger head dims would not fit the accumulator in registers; the op falls back there.
MAX_HEAD_DIM = 256
# The list schedule packs a block's origin row and column into one int32 (16 bits each);
# larger grids use the nested schedule.
MAX_LIST_EXTENT = (1 << 15) - 1


def _precision(dtype: torch.dtype) -> str:
    # fp32 must not silently become TF32 (1e-3 error); half types ignore the setting.
    return "ieee" if dtype == torch.float32 else "tf32"


def _dot_f32(dtype: torch.dtype) -> bool:
    # triton 3.9's interpreter returns garbage for bf16 tl.dot and truncates (instead of
    # rounding) fp32 -> bf16 casts. There, bf16 runs dot in fp32 (bf16 products are exact in
    # fp32) and writes an fp32 output that torch rounds; the GPU path is unaffected.
    return interpreting() and dtype == torch.bfloat16


def _launch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    height: int,
    width: int,
    num_global: int,
    radius: int,
    window: str,
    scale: float,
    num_pooled: int,
    tiles: AttentionTiles,
) -> None:
    b, heads, _, d = q.shape
    block_d = max(16, triton.next_power_of_2(d))
    scale_log2 = resolve_scale(scale, d) * _LOG2E
    precision = _precision(q.dtype)
    dot_f32 = _dot_f32(q.dtype)
    tiles_x = triton.cdiv(width, tiles.qx)
    grid = (triton.cdiv(height, tiles.qy) * tiles_x, b * heads)
    strides = (
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
    )  # fmt: skip
    if tiles.schedule == "list" and max(height, width, radius) > MAX_LIST_EXTENT:
        tiles = dataclasses.replace(tiles, schedule="nested")
    if tiles.schedule == "list":
        lists = key_block_lists(height, width, radius, window, (tiles.qy, tiles.qx),
                                (tiles.ky, tiles.kx), q.device)  # fmt: skip
        block_args, list_widths = lists.kernel_args(), lists.widths()
    else:
        block_args, list_widths = (out,) * 6, (0, 0, 0)  # unused without LIST
    _image_query_kernel[grid](
        q, k, v, out, *block_args, *strides,
        heads, height, width, num_global, num_pooled, radius, tiles_x, *list_widths, scale_log2,
        IS_DISC=window == "disc", LIST=tiles.schedule == "list", HEAD_DIM=d,
        QY=tiles.qy, QX=tiles.qx, KY=tiles.ky, KX=tiles.kx,
        BLOCK_D=block_d, BLOCK_G=tiles.block_g, PRECISION=precision, DOT_F32=dot_f32,
        num_warps=tiles.num_warps, num_stages=tiles.num_stages,
    )  # fmt: skip
    if num_global > 0:
        _launch_global(q, k, v, out, num_global, num_global + height * width, strides,
                       scale_log2, block_d, precision, dot_f32)  # fmt: skip


def _launch_global(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    num_global: int,
    n_visible: int,
    strides: tuple[int, ...],
    scale_log2: float,
    block_d: int,
    precision: str,
    dot_f32: bool,
) -> None:
    b, heads, _, d = q.shape
    block_m, block_n = 64, 64
    programs = triton.cdiv(num_global, block_m) * b * heads
    n_blocks = triton.cdiv(n_visible, block_n)
    # Enough key splits for ~4 programs per SM, each split at least 8 key blocks long
    # (1 in the interpreter, so that the tests cover the merge).
    sms, min_blocks = (_sm_count(q.device), 8) if q.is_cuda else (4, 1)
    splits = max(1, min(triton.cdiv(4 * sms, programs), n_blocks // min_blocks))
    split_len = triton.cdiv(n_blocks, splits) * block_n
    splits = triton.cdiv(n_visible, split_len)
    grid = (triton.cdiv(num_global, block_m), b * heads, splits)
    part = stats = out  # placeholders, unused without SPLIT
    if splits > 1:
        part = torch.empty(splits, b * heads, num_global, block_d, device=q.device)
        stats = torch.empty(splits, b * heads, num_global, 2, device=q.device)
    _global_query_kernel[grid](
        q, k, v, out, part, stats, *strides,
        heads, num_global, n_visible, split_len, scale_log2,
        SPLIT=splits > 1, BLOCK_M=block_m, BLOCK_N=block_n, HEAD_DIM=d, BLOCK_D=block_d,
        PRECISION=precision, DOT_F32=dot_f32, num_warps=4, num_stages=2,
    )  # fmt: skip
    if splits > 1:
        # One small kernel rather than a chain of torch ops: launches, not math, cost here.
        _merge_splits_kernel[(grid[0], grid[1])](
            part, stats, out, out.stride(0), out.stride(1), out.stride(2),
            heads, num_global, splits, HEAD_DIM=d, BLOCK_M=block_m, BLOCK_D=block_d,
            num_warps=4,
        )  # fmt: skip


def _sm_count(device: torch.device) -> int:
    return int(torch.cuda.get_device_properties(device).multi_processor_count)


def tuning_key(
    q: torch.Tensor,
    k: torch.Tensor,
    height: int,
    width: int,
    radius: int,
    window: str,
    scale: float,
) -> tuple[Any, ...]:
    """What autotuning results are kept per: one entry of :data:`TUNED` and :data:`TIMINGS`."""
    return (q.device, q.dtype, q.shape, k.shape, height, width, radius, window, scale)


def local_attention_2d_triton(
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
    tiles: AttentionTiles | None = None,
    autotune: bool | None = None,
) -> torch.Tensor:
    """Run the Triton kernels (CUDA, or CPU tensors under ``TRITON_INTERPRET=1``).

    ``tiles`` forces a tile shape; otherwise CUDA runs pick the fastest of
    :data:`TILE_CANDIDATES` once per shape (``autotune``, default: :func:`autotune_enabled`)
    and the interpreter uses the default. Head dims up to :data:`MAX_HEAD_DIM`.
    """
    check_attention_args(q, k, v, height, width, num_global, radius, window, num_pooled)
    if q.shape[-1] > MAX_HEAD_DIM:
        raise DifforgeError(f"the Triton local attention supports head dim <= {MAX_HEAD_DIM}")
    # The kernels index the head dim with unit stride.
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    out_dtype = torch.float32 if _dot_f32(q.dtype) else q.dtype
    out = torch.empty(q.shape, dtype=out_dtype, device=q.device)

    def run(t: AttentionTiles) -> None:
        _launch(q, k, v, out, height, width, num_global, radius, window, scale, num_pooled, t)

    if tiles is None:
        tiles = AttentionTiles()
        if autotune is None:
            autotune = autotune_enabled()
        if q.is_cuda and autotune and not interpreting():
            key = tuning_key(q, k, height, width, radius, window, scale)
            if key not in TUNED:
                TUNED[key], TIMINGS[key] = pick_fastest(TILE_CANDIDATES, run)
            tiles = TUNED[key]
    run(tiles)
    return out.to(q.dtype)
