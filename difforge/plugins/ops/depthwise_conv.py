"""``difforge::depthwise_conv2d``: depthwise K x K conv (groups = C) with runtime dilation.

Large-kernel depthwise convs (UniRepLKNet's merged 13x13, InceptionNeXt's bands fused into
one 11x11) are slow in cuDNN; on CUDA the op runs a Triton kernel, elsewhere the reference
``conv2d(groups=C)``. No annotations are postponed here: ``custom_op`` reads them.
"""

import torch
import torch.nn.functional as F

from difforge.plugins.conv_args import check_conv_args, conv_out_size
from difforge.plugins.kernels import triton_available


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
