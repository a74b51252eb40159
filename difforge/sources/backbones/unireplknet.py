"""UniRepLKNet's Dilated Reparam Block (AILab-CVC/UniRepLKNet ``unireplknet.py``).

Training form: ``BN(DW_KxK(x)) + sum_b BN_b(DWdil_{k_b, r_b}(x))``, every conv depthwise,
stride 1, no bias. :meth:`DilatedReparamBlock.merge` folds every BN and zero-inserts the
dilated kernels into one depthwise K x K conv with bias (the authors'
``merge_dilated_branches``), exactly up to rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from difforge.errors import DifforgeError

__all__ = [
    "BRANCH_TABLE",
    "DilatedReparamBlock",
    "dilate_kernel",
    "fuse_bn",
]

# K -> (branch kernel sizes, dilations), the authors' table.
BRANCH_TABLE: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {
    17: ((5, 9, 3, 3, 3), (1, 2, 4, 5, 7)),
    15: ((5, 7, 3, 3, 3), (1, 2, 3, 5, 7)),
    13: ((5, 7, 3, 3, 3), (1, 2, 3, 4, 5)),
    11: ((5, 5, 3, 3, 3), (1, 2, 3, 4, 5)),
    9: ((5, 5, 3, 3), (1, 2, 3, 4)),
    7: ((5, 3, 3), (1, 2, 3)),
    5: ((3, 3), (1, 2)),
}


def fuse_bn(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W', b') of ``bn(conv(x))`` as one conv, for a BatchNorm in eval mode."""
    assert bn.running_var is not None and bn.running_mean is not None
    std = (bn.running_var + bn.eps).sqrt()
    gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
    scale = gamma / std
    conv_bias = bias if bias is not None else torch.zeros_like(std)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return weight * scale.reshape(shape), beta + (conv_bias - bn.running_mean) * scale


def dilate_kernel(kernel: torch.Tensor, rate: int) -> torch.Tensor:
    """Depthwise kernel (C, 1, k, k) -> (C, 1, r(k-1)+1, r(k-1)+1) with r-1 zeros between taps.

    The authors' ``convert_dilated_to_nondilated`` builds its ones-kernel in the default dtype
    and so fails on float64 weights; this one takes the kernel's dtype and device.
    """
    if rate == 1:
        return kernel
    ones = torch.ones((1, 1, 1, 1), dtype=kernel.dtype, device=kernel.device)
    return F.conv_transpose2d(kernel, ones, stride=rate)


class DilatedReparamBlock(nn.Module):
    """Depthwise K x K conv plus parallel dilated depthwise branches, each followed by BN."""

    def __init__(self, channels: int, kernel_size: int = 13, deploy: bool = False) -> None:
        super().__init__()
        if kernel_size not in BRANCH_TABLE:
            known = ", ".join(str(k) for k in sorted(BRANCH_TABLE))
            raise DifforgeError(
                f"DilatedReparamBlock: kernel size {kernel_size} is not supported ({known})"
            )
        self.channels = channels
        self.kernel_size = kernel_size
        self.kernel_sizes, self.dilates = BRANCH_TABLE[kernel_size]
        self.lk_origin = nn.Conv2d(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=deploy
        )
        self.deployed = deploy
        if not deploy:
            self.origin_bn = nn.BatchNorm2d(channels)
            for k, r in zip(self.kernel_sizes, self.dilates, strict=True):
                conv = nn.Conv2d(
                    channels,
                    channels,
                    k,
                    padding=(r * (k - 1) + 1) // 2,
                    dilation=r,
                    groups=channels,
                    bias=False,
                )
                setattr(self, f"dil_conv_k{k}_{r}", conv)
                setattr(self, f"dil_bn_k{k}_{r}", nn.BatchNorm2d(channels))

    def branches(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d, int]]:
        """(conv, bn, dilation) of every dilated branch."""
        out = []
        for k, r in zip(self.kernel_sizes, self.dilates, strict=True):
            conv = getattr(self, f"dil_conv_k{k}_{r}")
            bn = getattr(self, f"dil_bn_k{k}_{r}")
            out.append((conv, bn, r))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deployed:
            return self.lk_origin(x)
        out = self.origin_bn(self.lk_origin(x))
        for conv, bn, _ in self.branches():
            out = out + bn(conv(x))
        return out

    @torch.no_grad()
    def merged_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight (C,1,K,K), bias (C,)) of the single equivalent depthwise conv."""
        if self.deployed:
            assert self.lk_origin.bias is not None
            return self.lk_origin.weight.detach().clone(), self.lk_origin.bias.detach().clone()
        weight, bias = fuse_bn(self.lk_origin.weight, self.lk_origin.bias, self.origin_bn)
        big = self.kernel_size
        for conv, bn, rate in self.branches():
            w_b, b_b = fuse_bn(conv.weight, None, bn)
            w_b = dilate_kernel(w_b, rate)
            pad = big // 2 - w_b.shape[-1] // 2
            weight = weight + F.pad(w_b, [pad] * 4)
            bias = bias + b_b
        return weight, bias

    @torch.no_grad()
    def merge(self) -> nn.Conv2d:
        """A new depthwise K x K conv with bias equal to this block (BN in eval mode)."""
        weight, bias = self.merged_kernel()
        conv = nn.Conv2d(
            self.channels,
            self.channels,
            self.kernel_size,
            padding=self.kernel_size // 2,
            groups=self.channels,
            bias=True,
            device=weight.device,
            dtype=weight.dtype,
        )
        conv.weight.copy_(weight)
        assert conv.bias is not None
        conv.bias.copy_(bias)
        return conv

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Switch this block to deploy form in place (the authors' ``merge_dilated_branches``)."""
        if self.deployed:
            return
        self.lk_origin = self.merge()
        del self.origin_bn
        for k, r in zip(self.kernel_sizes, self.dilates, strict=True):
            delattr(self, f"dil_conv_k{k}_{r}")
            delattr(self, f"dil_bn_k{k}_{r}")
        self.deployed = True
