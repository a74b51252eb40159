"""Triton device helpers of the ``difforge::local_attention_2d`` kernels.

The ``@triton.jit`` building blocks that :mod:`.local_attention_kernels` inlines into its
programs: the online-softmax step over one key block (:func:`_attend_block`, fp32
accumulation, ``exp2`` scores), a dense walk over a token range (:func:`_dense_span`), the
window predicate, and the two schedules that find an image tile's key blocks: ``nested``
(:func:`_nested_blocks`, computed in the kernel) and ``list`` (:func:`_listed_blocks`,
host-built lists from :mod:`.key_blocks`).
"""

from __future__ import annotations

import triton
import triton.language as tl


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
