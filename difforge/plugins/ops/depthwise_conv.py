"""``difforge::depthwise_conv2d``: depthwise K x K conv (groups = C) with runtime dilation.

Large-kernel depthwise convs (UniRepLKNet's merged 13x13, InceptionNeXt's bands fused into
one 11x11) are slow in cuDNN; on CUDA the op runs a Triton kernel, elsewhere the reference
``conv2d(groups=C)``. No annotations are postponed here: ``custom_op`` reads them.
"""

import torch
import torch.nn.functional as F

from difforge.errors import DifforgeError
from difforge.plugins.kernels import triton_available

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


def depthwise_conv2d_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int,
    dilation: int,
    padding: int,
) -> torch.Tensor:
    """The definition: ``conv2d(groups=C)``."""
    check_conv_args(x, weight, bias, stride, dilation, padding)
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups=x.shape[1])


@torch.library.custom_op("difforge::depthwise_conv2d", mutates_args=())
def depthwise_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int,
    dilation: int,
    padding: int,
) -> torch.Tensor:
    """Depthwise conv, output ``[B, C, Ho, Wo]`` in ``x``'s dtype."""
    if x.is_cuda and triton_available():
        from difforge.plugins.kernels.depthwise_conv import depthwise_conv2d_triton

        return depthwise_conv2d_triton(x, weight, bias, stride, dilation, padding)
    return depthwise_conv2d_reference(x, weight, bias, stride, dilation, padding)


@depthwise_conv2d.register_fake
def _depthwise_conv2d_fake(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int,
    dilation: int,
    padding: int,
) -> torch.Tensor:
    k = weight.shape[-1]
    ho = conv_out_size(x.shape[2], k, stride, dilation, padding)
    wo = conv_out_size(x.shape[3], k, stride, dilation, padding)
    return x.new_empty(x.shape[0], x.shape[1], ho, wo)
