"""The tiny-sd UNet with re-parameterisable convolutions, to exercise the ``reparam`` pass.

Every ``ResnetBlock2D`` gets
- ``conv1`` = :class:`LargeKernelConv`: a UniRepLKNet ``DilatedReparamBlock(K=13)``
  (depthwise, with parallel dilated branches and BatchNorms) then a 1 x 1 projection;
- ``conv2`` = :class:`InceptionMixerConv`: an InceptionNeXt mixer, a 1 x 1 projection and a
  BatchNorm.
All BatchNorms are in eval mode with seeded, non-trivial running statistics and affine
parameters, so that folding them is tested for real. Weights are random: it is a test model.
"""

from __future__ import annotations

import torch
from torch import nn

from difforge.sources.backbones.inceptionnext import InceptionDWConv2d
from difforge.sources.backbones.unireplknet import DilatedReparamBlock

__all__ = ["InceptionMixerConv", "LargeKernelConv", "with_large_kernels"]


class LargeKernelConv(nn.Sequential):
    """DRB(C_in, K) -> 1x1 conv C_in -> C_out: a drop-in for a 3x3 conv, stride 1."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 13) -> None:
        super().__init__(
            DilatedReparamBlock(in_channels, kernel_size),
            nn.Conv2d(in_channels, out_channels, 1),
        )


class InceptionMixerConv(nn.Sequential):
    """InceptionNeXt mixer -> 1x1 conv -> BatchNorm: a drop-in for a 3x3 conv, stride 1."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            InceptionDWConv2d(in_channels),
            nn.Conv2d(in_channels, out_channels, 1),
            nn.BatchNorm2d(out_channels),
        )


def _randomize_bn(module: nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, nn.BatchNorm2d):
                assert bn.running_mean is not None and bn.running_var is not None
                n = bn.num_features
                bn.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
                bn.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                bn.weight.copy_(1.0 + 0.2 * torch.randn(n, generator=generator))
                bn.bias.copy_(0.1 * torch.randn(n, generator=generator))


def with_large_kernels(unet: nn.Module, seed: int = 0) -> nn.Module:
    """``unet`` (a diffusers U-Net) with LK/InceptionNeXt convs in every resnet block, seeded
    BatchNorm statistics, in eval mode."""
    from diffusers.models.resnet import ResnetBlock2D

    for block in list(unet.modules()):
        if isinstance(block, ResnetBlock2D):
            c_in, c_mid = block.conv1.in_channels, block.conv1.out_channels
            c_out = block.conv2.out_channels
            block.conv1 = LargeKernelConv(c_in, c_mid)
            block.conv2 = InceptionMixerConv(c_mid, c_out)
    _randomize_bn(unet, torch.Generator().manual_seed(seed + 1))
    return unet.eval()
