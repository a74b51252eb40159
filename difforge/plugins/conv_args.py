"""Argument checks shared by every implementation of ``difforge::depthwise_conv2d``."""

from __future__ import annotations

import torch

from difforge.errors import DifforgeError

MAX_KERNEL = 31


def check_conv_args(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int,
    dilation: int,
    padding: int,
) -> None:
    """Raise :class:`DifforgeError` for shapes or settings the op does not support."""
    if x.dim() != 4 or weight.dim() != 4:
        raise DifforgeError("depthwise conv expects x [B, C, H, W] and weight [C, 1, K, K]")
    c, one, kh, kw = weight.shape
    if c != x.shape[1] or one != 1 or kh != kw:
        raise DifforgeError(
            f"depthwise weight shaped {tuple(weight.shape)} does not fit {x.shape[1]} channels"
        )
    if kh % 2 == 0 or kh > MAX_KERNEL:
        raise DifforgeError(f"depthwise kernel must be odd and <= {MAX_KERNEL}, got {kh}")
    if stride not in (1, 2) or dilation < 1 or padding < 0:
        raise DifforgeError(
            f"depthwise conv needs stride 1 or 2, dilation >= 1, padding >= 0; "
            f"got {stride}, {dilation}, {padding}"
        )
    if bias is not None and bias.shape != (c,):
        raise DifforgeError(f"depthwise bias shaped {tuple(bias.shape)}, expected ({c},)")
    if x.dtype != weight.dtype or (bias is not None and bias.dtype != x.dtype):
        raise DifforgeError("depthwise conv: x, weight and bias must share one dtype")
    if conv_out_size(x.shape[2], kh, stride, dilation, padding) < 1 or (
        conv_out_size(x.shape[3], kh, stride, dilation, padding) < 1
    ):
        raise DifforgeError("depthwise conv output would be empty: input too small for kernel")


def conv_out_size(size: int, kernel: int, stride: int, dilation: int, padding: int) -> int:
    """Output length along one axis (the usual conv arithmetic)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
