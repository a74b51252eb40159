"""Triton kernels for ``difforge::depthwise_conv2d`` (NCHW, K odd <= 31, runtime dilation).

Two kernels:

* Toeplitz (large kernels): for one channel and a BLOCK_H x BLOCK_W output tile, each kernel
  row ``ky`` is a matrix product ``X_ky [BLOCK_H, BLOCK_IN] @ T_ky [BLOCK_IN, BLOCK_W]`` where
  ``X_ky`` holds the input rows that tap row touches and ``T_ky[j, o] = w[ky, (j - o*s)/dil]``
  is the banded (Toeplitz) matrix of that weight row. Inputs are read K times instead of K*K
  times and the multiply-adds run on tensor cores; the band wastes some MACs, which tensor
  cores can afford. Only the first ``out_w`` of the BLOCK_W columns are kept, so BLOCK_IN
  can stay a small power of two.
* direct (fallback when the band does not fit 128 input columns): a [BLOCK_C, BLOCK_P] tile
  of channels x output pixels accumulates the K*K taps with FMAs.

Both accumulate in fp32 and write the input dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl

from difforge.plugins.conv_args import check_conv_args, conv_out_size
from difforge.plugins.kernels import autotune_enabled, interpreting, pick_fastest


# Sizes are not specialised (no recompile per grid or kernel size); strides are.
@triton.jit(do_not_specialize=["C", "H", "W", "Ho", "Wo", "K", "stride", "dilation", "padding",
                               "out_w", "tiles_x"])  # fmt: skip
def _dw_toeplitz_kernel(  # type: ignore[no-untyped-def]
    X,
    Wt,
    Bias,
    Out,
    stride_xb,
    stride_xc,
    stride_xh,
    stride_xw,
    stride_ob,
    stride_oc,
    stride_oh,
    stride_ow,
    C,
    H,
    W,
    Ho,
    Wo,
    K,
    stride,
    dilation,
    padding,
    out_w,
    tiles_x,
    HAS_BIAS: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_IN: tl.constexpr,
    PRECISION: tl.constexpr,
    DOT_F32: tl.constexpr,
):
    pid_t = tl.program_id(0)
    pid_bc = tl.program_id(1)
    # 64-bit image offsets: B * C * H * W can pass 2**31 elements.
    b = (pid_bc // C).to(tl.int64)
    c = (pid_bc % C).to(tl.int64)
    oy = (pid_t // tiles_x) * BLOCK_H + tl.arange(0, BLOCK_H)
    col = tl.arange(0, BLOCK_W)
    ox0 = (pid_t % tiles_x) * out_w
    ox = ox0 + col
    j = tl.arange(0, BLOCK_IN)
    ix = ox0 * stride - padding + j
    x_ok = (ix >= 0) & (ix < W)
    # Band of the Toeplitz matrix: input column j feeds output column o through tap t/dil.
    t = j[:, None] - (col * stride)[None, :]
    tap = t // dilation
    t_ok = (t >= 0) & (t % dilation == 0) & (tap < K) & (col < out_w)[None, :]
    tap = tl.where(t_ok, tap, 0)
    x_base = X + b * stride_xb + c * stride_xc
    w_base = Wt + c * K * K
    acc = tl.zeros([BLOCK_H, BLOCK_W], dtype=tl.float32)
    for ky in range(0, K):
        iy = oy * stride - padding + ky * dilation
        y_ok = (iy >= 0) & (iy < H)
        xt = tl.load(
            x_base + iy[:, None] * stride_xh + ix[None, :] * stride_xw,
            mask=y_ok[:, None] & x_ok[None, :],
            other=0.0,
        )
        wt = tl.load(w_base + ky * K + tap, mask=t_ok, other=0.0)
        if DOT_F32:
            acc += tl.dot(xt.to(tl.float32), wt.to(tl.float32), input_precision="ieee")
        else:
            acc += tl.dot(xt, wt, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(Bias + c).to(tl.float32)
    o_ok = (oy < Ho)[:, None] & ((col < out_w) & (ox < Wo))[None, :]
    o_ptrs = Out + b * stride_ob + c * stride_oc + oy[:, None] * stride_oh + ox[None, :] * stride_ow
    tl.store(o_ptrs, acc.to(Out.dtype.element_ty), mask=o_ok)


@triton.jit(do_not_specialize=["C", "H", "W", "Ho", "Wo", "K", "stride", "dilation", "padding"])
def _dw_direct_kernel(  # type: ignore[no-untyped-def]
    X,
    Wt,
    Bias,
    Out,
    stride_xb,
    stride_xc,
    stride_xh,
    stride_xw,
    stride_ob,
    stride_oc,
    stride_oh,
    stride_ow,
    C,
    H,
    W,
    Ho,
    Wo,
    K,
    stride,
    dilation,
    padding,
    HAS_BIAS: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    pid_p = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = offs_p < Ho * Wo
    oy = offs_p // Wo
    ox = offs_p % Wo
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = offs_c < C
    x_base = X + b * stride_xb + offs_c[:, None] * stride_xc
    acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
    for ky in range(0, K):
        iy = oy * stride - padding + ky * dilation
        y_ok = p_ok & (iy >= 0) & (iy < H)
        for kx in range(0, K):
            ix = ox * stride - padding + kx * dilation
            ok = y_ok & (ix >= 0) & (ix < W)
            xv = tl.load(
                x_base + (iy * stride_xh + ix * stride_xw)[None, :],
                mask=c_ok[:, None] & ok[None, :],
                other=0.0,
            )
            wv = tl.load(Wt + offs_c * K * K + ky * K + kx, mask=c_ok, other=0.0)
            acc += xv.to(tl.float32) * wv.to(tl.float32)[:, None]
    if HAS_BIAS:
        acc += tl.load(Bias + offs_c, mask=c_ok, other=0.0).to(tl.float32)[:, None]
    o_pix = oy * stride_oh + ox * stride_ow
    o_ptrs = Out + b * stride_ob + offs_c[:, None] * stride_oc + o_pix[None, :]
    tl.store(o_ptrs, acc.to(Out.dtype.element_ty), mask=c_ok[:, None] & p_ok[None, :])


@dataclass(frozen=True)
class ToeplitzTiles:
    """Output tile BLOCK_H x BLOCK_W (of which ``out_w`` columns are kept), BLOCK_IN inputs."""

    block_h: int
    block_w: int
    block_in: int
    num_warps: int = 4


@dataclass(frozen=True)
class DirectTiles:
    """Channel x output-pixel tile of the direct kernel."""

    block_c: int = 16
    block_p: int = 128
    num_warps: int = 4


Tiles = ToeplitzTiles | DirectTiles


def _kept_columns(tiles: ToeplitzTiles, kernel: int, stride: int, dilation: int) -> int:
    """Output columns a tile can compute from BLOCK_IN input columns (<= BLOCK_W)."""
    span = dilation * (kernel - 1) + 1
    return min(tiles.block_w, (tiles.block_in - span) // stride + 1)


def toeplitz_candidates(kernel: int, stride: int, dilation: int) -> list[ToeplitzTiles]:
    """Tile shapes whose band fits, cheapest first (MACs per kept output per kernel row)."""
    found: list[tuple[float, ToeplitzTiles]] = []
    for block_in in (32, 64, 128):
        for block_w in (16, 32, 64):
            if block_w > block_in:
                continue
            tiles = ToeplitzTiles(64, block_w, block_in)
            kept = _kept_columns(tiles, kernel, stride, dilation)
            if kept < max(1, block_w // 2):
                continue  # more than half the tile wasted
            found.append((block_in * block_w / kept, tiles))
    found.sort(key=lambda item: item[0])
    return [tiles for _, tiles in found]


# Autotuning results (CUDA): the tiles picked per input shape, in the order tuned.
TUNED: dict[tuple[Any, ...], Tiles] = {}
TIMINGS: dict[tuple[Any, ...], dict[Tiles, float]] = {}  # every candidate's ms per shape


def _launch(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    stride: int,
    dilation: int,
    padding: int,
    tiles: Tiles,
) -> None:
    b, c, h, w = x.shape
    kernel = weight.shape[-1]
    ho, wo = out.shape[2], out.shape[3]
    strides = (*x.stride(), *out.stride())
    bias_arg = bias if bias is not None else weight  # never read when HAS_BIAS is False
    if isinstance(tiles, ToeplitzTiles):
        out_w = _kept_columns(tiles, kernel, stride, dilation)
        tiles_x = triton.cdiv(wo, out_w)
        grid = (triton.cdiv(ho, tiles.block_h) * tiles_x, b * c)
        _dw_toeplitz_kernel[grid](
            x, weight, bias_arg, out, *strides,
            c, h, w, ho, wo, kernel, stride, dilation, padding, out_w, tiles_x,
            HAS_BIAS=bias is not None, BLOCK_H=tiles.block_h, BLOCK_W=tiles.block_w,
            BLOCK_IN=tiles.block_in, PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
            DOT_F32=_dot_f32(x.dtype), num_warps=tiles.num_warps,
        )  # fmt: skip
    else:
        grid_d = (triton.cdiv(ho * wo, tiles.block_p), triton.cdiv(c, tiles.block_c), b)
        _dw_direct_kernel[grid_d](
            x, weight, bias_arg, out, *strides,
            c, h, w, ho, wo, kernel, stride, dilation, padding,
            HAS_BIAS=bias is not None, BLOCK_C=tiles.block_c, BLOCK_P=tiles.block_p,
            num_warps=tiles.num_warps,
        )  # fmt: skip


def _dot_f32(dtype: torch.dtype) -> bool:
    # Same interpreter workaround as the attention kernel: bf16 tl.dot is broken there.
    return interpreting() and dtype == torch.bfloat16


def depthwise_conv2d_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int,
    dilation: int,
    padding: int,
    tiles: Tiles | None = None,
    autotune: bool | None = None,
) -> torch.Tensor:
    """Run the Triton depthwise conv (CUDA, or CPU tensors under ``TRITON_INTERPRET=1``).

    ``tiles`` forces a kernel and tile shape (:class:`ToeplitzTiles` or :class:`DirectTiles`);
    otherwise CUDA runs time a few candidates once per shape and keep the fastest.
    """
    check_conv_args(x, weight, bias, stride, dilation, padding)
    kernel = weight.shape[-1]
    x = x.contiguous()
    weight = weight.contiguous()
    ho = conv_out_size(x.shape[2], kernel, stride, dilation, padding)
    wo = conv_out_size(x.shape[3], kernel, stride, dilation, padding)
    out_dtype = torch.float32 if _dot_f32(x.dtype) else x.dtype
    out = torch.empty(x.shape[0], x.shape[1], ho, wo, dtype=out_dtype, device=x.device)
    if tiles is None:
        toeplitz = toeplitz_candidates(kernel, stride, dilation)
        candidates: list[Tiles] = [*toeplitz[:1]] if toeplitz else [DirectTiles()]
        if autotune is None:
            autotune = autotune_enabled()
        if x.is_cuda and autotune and not interpreting():
            # A few Toeplitz shapes and row heights, plus the direct kernel for small K.
            candidates = [
                *toeplitz[:2],
                *(ToeplitzTiles(32, t.block_w, t.block_in) for t in toeplitz[:2]),
                *(ToeplitzTiles(128, t.block_w, t.block_in, 8) for t in toeplitz[:1]),
                DirectTiles(),
            ]
            key = (x.device, x.dtype, x.shape, kernel, stride, dilation, padding)
            if key not in TUNED:

                def run(t: Tiles) -> None:
                    _launch(x, weight, bias, out, stride, dilation, padding, t)

                TUNED[key], TIMINGS[key] = pick_fastest(candidates, run)
            candidates = [TUNED[key]]
        tiles = candidates[0]
    _launch(x, weight, bias, out, stride, dilation, padding, tiles)
    return out.to(x.dtype)
