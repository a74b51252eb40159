"""nn.Modules that run difforge's custom ops, for patches to swap into models.

On a CUDA tensor the op runs the Triton kernel, elsewhere the PyTorch reference; under
``torch.onnx.export`` it becomes the ``difforge`` ONNX node with its standard-op fallback.
"""

from __future__ import annotations

import torch
from torch import nn


class DepthwiseConv2d(nn.Module):
    """A depthwise K×K conv (groups = channels) through ``difforge::depthwise_conv2d``.

    Its parameters are named ``weight`` and ``bias`` like ``nn.Conv2d``'s, so state dicts
    carry over.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: int = 1,
        dilation: int = 1,
        padding: int | None = None,
    ) -> None:
        super().__init__()
        import difforge.plugins.ops  # noqa: F401  (registers torch.ops.difforge.*)

        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None
        self.stride = stride
        self.dilation = dilation
        k = weight.shape[-1]
        self.padding = dilation * (k // 2) if padding is None else padding

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> DepthwiseConv2d:
        """The same computation as a square, symmetric-padded depthwise ``nn.Conv2d``."""
        k = conv.kernel_size
        if (
            conv.groups != conv.in_channels
            or conv.out_channels != conv.in_channels
            or k[0] != k[1]
            or conv.stride[0] != conv.stride[1]
            or conv.dilation[0] != conv.dilation[1]
            or not isinstance(conv.padding, tuple)
            or conv.padding[0] != conv.padding[1]
        ):
            raise ValueError(f"not a square depthwise conv: {conv}")
        return cls(conv.weight, conv.bias, conv.stride[0], conv.dilation[0], conv.padding[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.difforge.depthwise_conv2d(
            x, self.weight, self.bias, self.stride, self.dilation, self.padding
        )
