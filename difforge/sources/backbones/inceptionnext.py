"""InceptionNeXt's token mixer (sail-sg/inceptionnext, timm ``inception_next.py``).

Followed from timm's ``InceptionDWConv2d``::

    gc = int(in_chs * branch_ratio)  # channel numbers of a convolution branch
    self.split_indexes = (in_chs - 3 * gc, gc, gc, gc)
    x_id, x_hw, x_w, x_h = torch.split(x, self.split_indexes, dim=1)
    return torch.cat((x_id, self.dwconv_hw(x_hw), self.dwconv_w(x_w), self.dwconv_h(x_h)), dim=1)

with ``dwconv_hw`` square (pad k//2), ``dwconv_w`` (1, band) pad (0, band//2) and ``dwconv_h``
(band, 1) pad (band//2, 0), all depthwise with bias (dilation 1, timm's default).
:meth:`InceptionDWConv2d.fold` writes the same map as one depthwise band x band conv.
"""

from __future__ import annotations

import torch
from torch import nn

from difforge.errors import DifforgeError

__all__ = ["InceptionDWConv2d"]


class InceptionDWConv2d(nn.Module):
    """[identity | square DW | 1 x band DW | band x 1 DW] over channel groups, concatenated."""

    def __init__(
        self,
        in_chs: int,
        square_kernel_size: int = 3,
        band_kernel_size: int = 11,
        branch_ratio: float = 0.125,
    ) -> None:
        super().__init__()
        gc = int(in_chs * branch_ratio)
        if gc < 1 or square_kernel_size % 2 == 0 or band_kernel_size % 2 == 0:
            raise DifforgeError(
                f"InceptionDWConv2d: needs int(C*ratio) >= 1 and odd kernels "
                f"(C={in_chs}, ratio={branch_ratio}, "
                f"kernels {square_kernel_size}/{band_kernel_size})"
            )
        if square_kernel_size > band_kernel_size:
            raise DifforgeError("InceptionDWConv2d: the square kernel must not exceed the band")
        self.in_chs = in_chs
        self.gc = gc
        self.square_kernel_size = square_kernel_size
        self.band_kernel_size = band_kernel_size
        sq, band = square_kernel_size, band_kernel_size
        self.dwconv_hw = nn.Conv2d(gc, gc, sq, padding=sq // 2, groups=gc)
        self.dwconv_w = nn.Conv2d(gc, gc, (1, band), padding=(0, band // 2), groups=gc)
        self.dwconv_h = nn.Conv2d(gc, gc, (band, 1), padding=(band // 2, 0), groups=gc)
        self.split_indexes = (in_chs - 3 * gc, gc, gc, gc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_id, x_hw, x_w, x_h = torch.split(x, list(self.split_indexes), dim=1)
        return torch.cat(
            (x_id, self.dwconv_hw(x_hw), self.dwconv_w(x_w), self.dwconv_h(x_h)), dim=1
        )

    @torch.no_grad()
    def fold(self) -> nn.Conv2d:
        """One depthwise band x band conv with bias computing exactly this mixer.

        Identity channels get a centre 1 (bias 0), the square kernel sits centred, the
        1 x band kernel in the centre row and the band x 1 kernel in the centre column.
        """
        c, gc, band, sq = self.in_chs, self.gc, self.band_kernel_size, self.square_kernel_size
        ref = self.dwconv_hw.weight
        weight = torch.zeros((c, 1, band, band), dtype=ref.dtype, device=ref.device)
        bias = torch.zeros((c,), dtype=ref.dtype, device=ref.device)
        mid, n_id = band // 2, c - 3 * gc
        weight[:n_id, 0, mid, mid] = 1.0
        lo = mid - sq // 2
        weight[n_id : n_id + gc, :, lo : lo + sq, lo : lo + sq] = self.dwconv_hw.weight
        weight[n_id + gc : n_id + 2 * gc, :, mid : mid + 1, :] = self.dwconv_w.weight
        weight[n_id + 2 * gc :, :, :, mid : mid + 1] = self.dwconv_h.weight
        for i, conv in enumerate((self.dwconv_hw, self.dwconv_w, self.dwconv_h)):
            assert conv.bias is not None
            bias[n_id + i * gc : n_id + (i + 1) * gc] = conv.bias
        out = nn.Conv2d(
            c, c, band, padding=mid, groups=c, bias=True, device=ref.device, dtype=ref.dtype
        )
        out.weight.copy_(weight)
        assert out.bias is not None
        out.bias.copy_(bias)
        return out
