"""Triton kernels for ``difforge::local_attention_2d`` (fused, flash-style, linear memory).

Two programs:

* image queries: one program per (tile of QY x QX query pixels, batch*head). It walks the
  tile's halo as blocks of KY x KX image keys, skipping the blocks a disc cannot reach, then
  the T global keys and the P pooled keys, with an online softmax in fp32. Two schedules
  find the blocks: ``nested`` computes, per key-row block, the column span the nearest row
  needs; ``list`` reads host-built per-tile block lists (:mod:`.key_blocks`) and runs fully
  visible blocks without a mask;
* global (text) queries: plain dense flash attention over the T + H*W non-pooled keys.

Scores use ``exp2`` with ``log2(e)`` folded into the scale. fp32 inputs use IEEE dots so
fp32 results match the float64 reference to ~1e-6 rather than TF32's ~1e-3.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl

from difforge.errors import DifforgeError
from difforge.plugins.attention_args import check_attention_args, resolve_scale
from difforge.plugins.kernels import autotune_enabled, interpreting, pick_fastest
from difforge.plugins.kernels.key_blocks import key_block_lists

_LOG2E = 1.4426950408889634
# Larger head dims would not fit the accumulator in registers; the op falls back there.
MAX_HEAD_DIM = 256
# The list schedule packs a block's origin row and column into one int32 (16 bits each);
# larger grids use the nested schedule.
MAX_LIST_EXTENT = (1 << 15) - 1


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, DOT_F32: tl.constexpr):  # type: ignore[no-untyped-def]
    """``a @ b`` with fp32 accumulation; DOT_F32 upcasts first (interpreter bf16 workaround)."""
    if DOT_F32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _attend_block(  # type: ignore[no-untyped-def]
    acc,
    m_i,
    l_i,
    q,
    k_ptrs,
    v_ptrs,
    load_mask,
    visible,
    scale_log2,
    PRECISION: tl.constexpr,
    DOT_F32: tl.constexpr,
):
    """One online-softmax step over a block of keys (``visible``: [BM, BN] bool).

    ``load_mask`` ([BN, BLOCK_D]) also masks head-dim padding: an unmasked read there would
    touch the next token (or past the tensor's end) and could bring in NaNs. ``None`` for
    either (a compile-time choice) drops that mask: blocks known to be fully visible and
    inside the grid skip all per-pair work but the softmax itself.
    """
    if load_mask is None:  # noqa: SIM108 - compile-time branch: triton has no None ternary
        k = tl.load(k_ptrs)
    else:
        k = tl.load(k_ptrs, mask=load_mask, other=0.0)
    s = _dot(q, tl.trans(k), PRECISION, DOT_F32)
    if visible is not None:
        s = tl.where(visible, s, float("-inf"))
    # The scale (> 0) is applied to the row max and inside the exponent, where it fuses
    # into one FMA per score, rather than as a separate multiply of every score.
    m_new = tl.maximum(m_i, tl.max(s, 1) * scale_log2)
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s * scale_log2 - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    if load_mask is None:  # noqa: SIM108
        v = tl.load(v_ptrs)
    else:
        v = tl.load(v_ptrs, mask=load_mask, other=0.0)
    if DOT_F32:  # noqa: SIM108 - constexpr branch, kept explicit for the compiler
        pv = _dot(p, v, PRECISION, DOT_F32)  # no bf16 rounding of p: see _dot_f32
    else:
        pv = _dot(p.to(v.dtype), v, PRECISION, DOT_F32)
    acc = acc * alpha[:, None] + pv
    return acc, m_new, l_i


@triton.jit
def _dense_span(  # type: ignore[no-untyped-def]
    acc,
    m_i,
    l_i,
    q,
    k_base,
    v_base,
    stride_kn,
    stride_vn,
    offs_d,
    lo,
    hi,
    scale_log2,
    HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr,
    EVEN_D: tl.constexpr,
    PRECISION: tl.constexpr,
    DOT_F32: tl.constexpr,
):
    """Attend to every key in token range [lo, hi): whole blocks unmasked, then the tail.

    Query rows past the end of the caller's tile are computed and never stored, so only the
    keys past ``hi`` in the last block need a mask.
    """
    d_ok = offs_d < HEAD_DIM
    if EVEN_D:  # noqa: SIM108 - compile-time branch: triton has no None ternary
        d_mask = None
    else:
        d_mask = d_ok[None, :]
    whole = lo + tl.maximum(hi - lo, 0) // BLOCK_N * BLOCK_N
    for n0 in range(lo, whole, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        k_ptrs = k_base + offs_n[:, None] * stride_kn + offs_d[None, :]
        v_ptrs = v_base + offs_n[:, None] * stride_vn + offs_d[None, :]
        acc, m_i, l_i = _attend_block(
            acc, m_i, l_i, q, k_ptrs, v_ptrs, d_mask, None, scale_log2, PRECISION, DOT_F32
        )
    for n0 in range(whole, hi, BLOCK_N):  # at most one block
        offs_n = n0 + tl.arange(0, BLOCK_N)
        ok = offs_n < hi
        k_ptrs = k_base + offs_n[:, None] * stride_kn + offs_d[None, :]
        v_ptrs = v_base + offs_n[:, None] * stride_vn + offs_d[None, :]
        kv_mask = ok[:, None] & d_ok[None, :]
        acc, m_i, l_i = _attend_block(
            acc, m_i, l_i, q, k_ptrs, v_ptrs, kv_mask, ok[None, :], scale_log2, PRECISION,
            DOT_F32,
        )  # fmt: skip
    return acc, m_i, l_i


@triton.jit
def _window_visible(  # type: ignore[no-untyped-def]
    qy, qx, ky, kx, sy, sx, r2, kernel, IS_DISC: tl.constexpr
):
    """[BM, BN] window predicate (no grid or row checks)."""
    if IS_DISC:
        dy = qy[:, None] - ky[None, :]
        dx = qx[:, None] - kx[None, :]
        return dy * dy + dx * dx < r2
    return (
        (ky[None, :] >= sy[:, None])
        & (ky[None, :] < sy[:, None] + kernel)
        & (kx[None, :] >= sx[:, None])
        & (kx[None, :] < sx[:, None] + kernel)
    )


@triton.jit
def _nested_blocks(  # type: ignore[no-untyped-def]
    acc, m_i, l_i, q, qy, qx, qy0, qx0, d_ok, k_base, v_base, stride_kn, stride_vn,
    offs_d, H, W, T, radius, scale_log2,
    IS_DISC: tl.constexpr, QY: tl.constexpr, QX: tl.constexpr, KY: tl.constexpr,
    KX: tl.constexpr, PRECISION: tl.constexpr, DOT_F32: tl.constexpr,
):  # fmt: skip
    """Walk the tile's halo as a loop nest: key-row blocks, then the columns they need.

    Query rows past the grid are computed like the others and never stored: only keys are
    bounds-checked.
    """
    # Last real query row/column of this tile (tiles at the border are partial).
    qy1 = tl.minimum(qy0 + QY, H) - 1
    qx1 = tl.minimum(qx0 + QX, W) - 1
    kernel = 2 * radius + 1
    if IS_DISC:
        ky_lo = tl.maximum(qy0 - radius + 1, 0)
        ky_hi = tl.minimum(qy1 + radius - 1, H - 1)
        kx_lo_sq = 0
        kx_hi_sq = 0
    else:
        # Square window start per axis: clamp(q - r, 0, max(L - K, 0)), monotone in q.
        ky_lo = tl.minimum(tl.maximum(qy0 - radius, 0), tl.maximum(H - kernel, 0))
        ky_hi = tl.minimum(
            tl.minimum(tl.maximum(qy1 - radius, 0), tl.maximum(H - kernel, 0)) + kernel - 1,
            H - 1,
        )
        kx_lo_sq = tl.minimum(tl.maximum(qx0 - radius, 0), tl.maximum(W - kernel, 0))
        kx_hi_sq = tl.minimum(
            tl.minimum(tl.maximum(qx1 - radius, 0), tl.maximum(W - kernel, 0)) + kernel - 1,
            W - 1,
        )
    sy = tl.minimum(tl.maximum(qy - radius, 0), tl.maximum(H - kernel, 0))
    sx = tl.minimum(tl.maximum(qx - radius, 0), tl.maximum(W - kernel, 0))
    r2 = radius * radius
    offs_n = tl.arange(0, KY * KX)
    for ky0 in range(ky_lo, ky_hi + 1, KY):
        if IS_DISC:
            # Nearest key row of this block to the tile bounds the columns any query needs:
            # |dx| <= ext with ext the largest integer such that ext^2 < r^2 - dy_min^2.
            dy_min = tl.maximum(tl.maximum(ky0 - qy1, qy0 - (ky0 + KY - 1)), 0)
            room = r2 - dy_min * dy_min
            ext = tl.sqrt(tl.maximum(room, 0).to(tl.float32)).to(tl.int32)
            ext = tl.where(ext * ext >= room, ext - 1, ext)
            ext = tl.where((ext + 1) * (ext + 1) < room, ext + 1, ext)
            kx_lo = tl.maximum(qx0 - ext, 0)
            kx_hi = tl.minimum(qx1 + ext, W - 1)
        else:
            kx_lo = kx_lo_sq
            kx_hi = kx_hi_sq
        for kx0 in range(kx_lo, kx_hi + 1, KX):
            ky = ky0 + offs_n // KX
            kx = kx0 + offs_n % KX
            k_ok = (ky <= ky_hi) & (kx <= kx_hi)
            tok = T + ky * W + kx
            k_ptrs = k_base + tok[:, None] * stride_kn + offs_d[None, :]
            v_ptrs = v_base + tok[:, None] * stride_vn + offs_d[None, :]
            inside = _window_visible(qy, qx, ky, kx, sy, sx, r2, kernel, IS_DISC)
            visible = k_ok[None, :] & inside
            kv_mask = k_ok[:, None] & d_ok[None, :]
            acc, m_i, l_i = _attend_block(
                acc, m_i, l_i, q, k_ptrs, v_ptrs, kv_mask, visible, scale_log2, PRECISION, DOT_F32
            )
    return acc, m_i, l_i


@triton.jit
def _list_block_ptrs(  # type: ignore[no-untyped-def]
    entry, n_y, n_x, k_base, v_base, stride_kn, stride_vn, offs_d, W, T
):  # fmt: skip
    """Key coordinates and K/V pointers of the block whose packed origin is ``entry``."""
    ky = (entry >> 16) + n_y
    kx = (entry & 0xFFFF) + n_x
    tok = T + ky * W + kx
    k_ptrs = k_base + tok[:, None] * stride_kn + offs_d[None, :]
    v_ptrs = v_base + tok[:, None] * stride_vn + offs_d[None, :]
    return ky, kx, k_ptrs, v_ptrs


@triton.jit
def _listed_blocks(  # type: ignore[no-untyped-def]
    acc, m_i, l_i, q, qy, qx, d_ok, k_base, v_base, stride_kn, stride_vn, offs_d,
    H, W, T, radius, scale_log2, FullCount, FullIndex, PartialCount, PartialIndex,
    EdgeCount, EdgeIndex, pid_tile, full_width, partial_width, edge_width,
    IS_DISC: tl.constexpr, KY: tl.constexpr, KX: tl.constexpr, EVEN_D: tl.constexpr,
    PRECISION: tl.constexpr, DOT_F32: tl.constexpr,
):  # fmt: skip
    """Walk the tile's host-built key-block lists (see ``key_blocks``): one flat loop each.

    Full blocks run without any mask, partial blocks test the window per pair, edge blocks
    (cut by the grid) also mask the keys outside it. Query rows past the grid are computed
    like the others and never stored, so no list masks them.
    """
    offs_n = tl.arange(0, KY * KX)
    n_y = offs_n // KX
    n_x = offs_n % KX
    if EVEN_D:  # noqa: SIM108 - compile-time branch: triton has no None ternary
        d_mask = None
    else:
        d_mask = d_ok[None, :]
    full_row = FullIndex + pid_tile * full_width
    n_full = tl.load(FullCount + pid_tile)
    # The next entry is read one iteration ahead: left to the pipeliner, this loop's index
    # goes through shared memory and every block waits for all copies in flight (ttgir on
    # sm_90: async_wait num = 0, where the masked loops below get num = 2).
    next_entry = tl.load(full_row)
    for i in range(0, n_full):
        entry = next_entry
        next_entry = tl.load(full_row + i + 1, mask=i + 1 < n_full, other=0)
        _, _, k_ptrs, v_ptrs = _list_block_ptrs(
            entry, n_y, n_x, k_base, v_base, stride_kn, stride_vn, offs_d, W, T
        )
        acc, m_i, l_i = _attend_block(
            acc, m_i, l_i, q, k_ptrs, v_ptrs, d_mask, None, scale_log2, PRECISION, DOT_F32
        )
    kernel = 2 * radius + 1
    sy = tl.minimum(tl.maximum(qy - radius, 0), tl.maximum(H - kernel, 0))
    sx = tl.minimum(tl.maximum(qx - radius, 0), tl.maximum(W - kernel, 0))
    r2 = radius * radius
    partial_row = PartialIndex + pid_tile * partial_width
    for i in range(0, tl.load(PartialCount + pid_tile)):
        ky, kx, k_ptrs, v_ptrs = _list_block_ptrs(
            tl.load(partial_row + i), n_y, n_x, k_base, v_base, stride_kn, stride_vn, offs_d,
            W, T,
        )  # fmt: skip
        visible = _window_visible(qy, qx, ky, kx, sy, sx, r2, kernel, IS_DISC)
        acc, m_i, l_i = _attend_block(
            acc, m_i, l_i, q, k_ptrs, v_ptrs, d_mask, visible, scale_log2, PRECISION, DOT_F32
        )
    edge_row = EdgeIndex + pid_tile * edge_width
    for i in range(0, tl.load(EdgeCount + pid_tile)):
        ky, kx, k_ptrs, v_ptrs = _list_block_ptrs(
            tl.load(edge_row + i), n_y, n_x, k_base, v_base, stride_kn, stride_vn, offs_d, W, T
        )
        # kx >= W would wrap into the next row's tokens: the bounds are part of the mask.
        k_ok = (ky < H) & (kx < W)
        visible = k_ok[None, :] & _window_visible(qy, qx, ky, kx, sy, sx, r2, kernel, IS_DISC)
        kv_mask = k_ok[:, None] & d_ok[None, :]
        acc, m_i, l_i = _attend_block(
            acc, m_i, l_i, q, k_ptrs, v_ptrs, kv_mask, visible, scale_log2, PRECISION, DOT_F32
        )
    return acc, m_i, l_i


# Shape scalars are not specialised (no recompile per grid size, radius or text length);
# strides are, so that loads along the head dim vectorise.
@triton.jit(
    do_not_specialize=[
        "heads", "H", "W", "T", "P", "radius", "tiles_x", "full_width", "partial_width",
        "edge_width",
    ]
)  # fmt: skip
def _image_query_kernel(  # type: ignore[no-untyped-def]
    Q,
    K,
    V,
    Out,
    FullCount,
    FullIndex,
    PartialCount,
    PartialIndex,
    EdgeCount,
    EdgeIndex,
    stride_qb,
    stride_qh,
    stride_qn,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_ob,
    stride_oh,
    stride_on,
    heads,
    H,
    W,
    T,
    P,
    radius,
    tiles_x,
    full_width,
    partial_width,
    edge_width,
    scale_log2,
    IS_DISC: tl.constexpr,
    LIST: tl.constexpr,
    QY: tl.constexpr,
    QX: tl.constexpr,
    KY: tl.constexpr,
    KX: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_G: tl.constexpr,
    PRECISION: tl.constexpr,
    DOT_F32: tl.constexpr,
):
    pid_tile = tl.program_id(0)
    pid_bh = tl.program_id(1)
    # 64-bit batch/head offsets: B * heads * N * d can pass 2**31 elements.
    b = (pid_bh // heads).to(tl.int64)
    h = (pid_bh % heads).to(tl.int64)
    qy0 = (pid_tile // tiles_x) * QY
    qx0 = (pid_tile % tiles_x) * QX
    offs_m = tl.arange(0, QY * QX)
    qy = qy0 + offs_m // QX
    qx = qx0 + offs_m % QX
    row_ok = (qy < H) & (qx < W)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    q_base = Q + b * stride_qb + h * stride_qh
    q_ptrs = q_base + (T + qy * W + qx)[:, None] * stride_qn + offs_d[None, :]
    q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh

    # A finite start value keeps exp2(m_old - m_new) well defined for all-masked blocks.
    m_i = tl.full([QY * QX], -1.0e30, dtype=tl.float32)
    l_i = tl.zeros([QY * QX], dtype=tl.float32)
    acc = tl.zeros([QY * QX, BLOCK_D], dtype=tl.float32)

    if LIST:
        acc, m_i, l_i = _listed_blocks(
            acc, m_i, l_i, q, qy, qx, d_ok, k_base, v_base, stride_kn, stride_vn, offs_d,
            H, W, T, radius, scale_log2, FullCount, FullIndex, PartialCount, PartialIndex,
            EdgeCount, EdgeIndex, pid_tile, full_width, partial_width, edge_width,
            IS_DISC, KY, KX, BLOCK_D == HEAD_DIM, PRECISION, DOT_F32,
        )  # fmt: skip
    else:
        acc, m_i, l_i = _nested_blocks(
            acc, m_i, l_i, q, qy, qx, qy0, qx0, d_ok, k_base, v_base, stride_kn,
            stride_vn, offs_d, H, W, T, radius, scale_log2,
            IS_DISC, QY, QX, KY, KX, PRECISION, DOT_F32,
        )  # fmt: skip

    # Global keys [0, T) and pooled keys [T + HW, T + HW + P): seen by every image query.
    acc, m_i, l_i = _dense_span(
        acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_vn, offs_d,
        0, T, scale_log2, HEAD_DIM, BLOCK_G, BLOCK_D == HEAD_DIM, PRECISION, DOT_F32,
    )  # fmt: skip
    acc, m_i, l_i = _dense_span(
        acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_vn, offs_d, T + H * W,
        T + H * W + P, scale_log2, HEAD_DIM, BLOCK_G, BLOCK_D == HEAD_DIM, PRECISION, DOT_F32,
    )  # fmt: skip

    l_i = tl.where(l_i > 0, l_i, 1.0)
    out = acc / l_i[:, None]
    o_ptrs = Out + b * stride_ob + h * stride_oh
    o_ptrs = o_ptrs + (T + qy * W + qx)[:, None] * stride_on + offs_d[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


@triton.jit(do_not_specialize=["heads", "T", "n_visible", "split_len"])
def _global_query_kernel(  # type: ignore[no-untyped-def]
    Q,
    K,
    V,
    Out,
    Part,
    Stats,
    stride_qb,
    stride_qh,
    stride_qn,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_ob,
    stride_oh,
    stride_on,
    heads,
    T,
    n_visible,
    split_len,
    scale_log2,
    SPLIT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
    DOT_F32: tl.constexpr,
):
    """Dense rows for the T global queries over keys [0, n_visible).

    With SPLIT, program (m, bh, s) covers keys [s*split_len, (s+1)*split_len) and writes its
    unnormalised partial output to ``Part`` [S, B*heads, T, BLOCK_D] and (max, sum) to
    ``Stats`` [S, B*heads, T, 2]; the launcher merges the splits. T is small next to H*W, so
    without splitting the key range these few programs would leave most SMs idle.
    """
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    pid_s = tl.program_id(2)
    b = (pid_bh // heads).to(tl.int64)
    h = (pid_bh % heads).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_m < T
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn + offs_d[None, :]
    q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    lo = pid_s * split_len
    hi = tl.minimum(lo + split_len, n_visible)
    acc, m_i, l_i = _dense_span(
        acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_vn, offs_d,
        lo, hi, scale_log2, HEAD_DIM, BLOCK_N, BLOCK_D == HEAD_DIM, PRECISION, DOT_F32,
    )  # fmt: skip
    if SPLIT:
        row = (pid_s * tl.num_programs(1) + pid_bh) * T + offs_m
        p_ptrs = Part + row[:, None] * BLOCK_D + offs_d[None, :]
        tl.store(p_ptrs, acc, mask=row_ok[:, None])
        tl.store(Stats + row * 2, m_i, mask=row_ok)
        tl.store(Stats + row * 2 + 1, l_i, mask=row_ok)
    else:
        l_i = tl.where(l_i > 0, l_i, 1.0)
        out = acc / l_i[:, None]
        o_ptrs = Out + b * stride_ob + h * stride_oh
        o_ptrs = o_ptrs + offs_m[:, None] * stride_on + offs_d[None, :]
        tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


@triton.jit(do_not_specialize=["heads", "T", "splits"])
def _merge_splits_kernel(  # type: ignore[no-untyped-def]
    Part,
    Stats,
    Out,
    stride_ob,
    stride_oh,
    stride_on,
    heads,
    T,
    splits,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Combine the key splits of :func:`_global_query_kernel` (log2-domain softmax states)."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    n_bh = tl.num_programs(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_m < T
    offs_d = tl.arange(0, BLOCK_D)
    m_max = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)
    for split in range(0, splits):
        row = (split * n_bh + pid_bh) * T + offs_m
        m_max = tl.maximum(m_max, tl.load(Stats + row * 2, mask=row_ok, other=-1.0e30))
    total = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for split in range(0, splits):
        row = (split * n_bh + pid_bh) * T + offs_m
        weight = tl.exp2(tl.load(Stats + row * 2, mask=row_ok, other=-1.0e30) - m_max)
        total += weight * tl.load(Stats + row * 2 + 1, mask=row_ok, other=0.0)
        part = tl.load(Part + row[:, None] * BLOCK_D + offs_d[None, :], mask=row_ok[:, None])
        acc += weight[:, None] * part
    total = tl.where(total > 0, total, 1.0)
    out = acc / total[:, None]
    b = (pid_bh // heads).to(tl.int64)
    h = (pid_bh % heads).to(tl.int64)
    o_ptrs = Out + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_on + offs_d[None, :]
    o_ok = row_ok[:, None] & (offs_d < HEAD_DIM)[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=o_ok)


SCHEDULES = ("nested", "list")


@dataclass(frozen=True)
class AttentionTiles:
    """Tile shape of the image-query program: QY x QX queries, KY x KX key blocks.

    ``schedule`` is how a tile finds its key blocks: ``nested`` computes the halo's rows and
    column spans in the kernel (blocks placed relative to the tile); ``list`` walks the
    host-built per-tile lists of :mod:`.key_blocks` (blocks on a fixed grid; fully visible
    ones run unmasked) in one flat loop the compiler can software-pipeline.
    """

    qy: int = 8
    qx: int = 8
    ky: int = 8
    kx: int = 8
    block_g: int = 64
    num_warps: int = 4
    num_stages: int = 2
    schedule: str = "nested"

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise DifforgeError(f"attention tile schedule must be one of {SCHEDULES}, "
                                f"got {self.schedule!r}")  # fmt: skip


# Candidate tiles tried by autotuning on CUDA (kept small: each one is a compile).
# 8x8 query tiles waste least: computed / visible pairs at 128^2, r=16 is 1.87 with 8x8 key
# blocks placed per tile (2.11 with 4x16, 2.24 for 16x8 queries; 4x8 queries gain nothing,
# 1.80, as the key blocks dominate) and 1.92 with grid-aligned blocks (the list schedule).
# The nested 8x8 tiles are the fastest measured (docs/perf.md); the list variants are the
# candidates still to be timed on a GPU. None of them spills registers on sm_90 for head dim 64.
TILE_CANDIDATES: tuple[AttentionTiles, ...] = (
    AttentionTiles(8, 8, 8, 8),
    AttentionTiles(8, 8, 8, 8, num_stages=3),
    AttentionTiles(8, 8, 4, 16),
    AttentionTiles(8, 8, 8, 8, num_warps=8),
    AttentionTiles(8, 8, 8, 8, schedule="list"),
    AttentionTiles(8, 8, 8, 8, num_stages=3, schedule="list"),
    AttentionTiles(8, 16, 8, 8, num_warps=8, num_stages=3, schedule="list"),
)

# Autotuning results (CUDA): the tiles picked per input shape, in the order tuned, and what
# every candidate took (ms; inf: failed to compile).
TUNED: dict[tuple[Any, ...], AttentionTiles] = {}
TIMINGS: dict[tuple[Any, ...], dict[AttentionTiles, float]] = {}


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
