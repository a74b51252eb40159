"""Triton programs for ``difforge::local_attention_2d`` (fused, flash-style, linear memory).

Three programs, launched by :mod:`.local_attention`:

* image queries: one program per (tile of QY x QX query pixels, batch*head). It walks the
  tile's halo as blocks of KY x KX image keys, skipping the blocks a disc cannot reach, then
  the T global keys and the P pooled keys, with an online softmax in fp32. Two schedules
  find the blocks (:mod:`.local_attention_blocks`): ``nested`` computes, per key-row block,
  the column span the nearest row needs; ``list`` reads host-built per-tile block lists
  (:mod:`.key_blocks`) and runs fully visible blocks without a mask;
* global (text) queries: plain dense flash attention over the T + H*W non-pooled keys,
  optionally split along the keys;
* the merge of those key splits.

Scores use ``exp2`` with ``log2(e)`` folded into the scale. fp32 inputs use IEEE dots so
fp32 results match the float64 reference to ~1e-6 rather than TF32's ~1e-3.
"""

from __future__ import annotations

import triton
import triton.language as tl

from difforge.plugins.kernels.local_attention_blocks import (
    _dense_span,
    _listed_blocks,
    _nested_blocks,
)


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
