"""ScaleCrafter's re-dilated conv module and the authors' settings-file readers.

:class:`RedilatedConv2d` replaces a UNet conv and runs, per variant, the original conv or the
re-dilated one (formula in :mod:`difforge.patches.redilate`); the readers parse the authors'
``dilate_settings`` / ``disperse_settings`` files; :func:`default_blocks` and the name checks
say which convs of a diffusers UNet may be re-dilated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from difforge.errors import DifforgeError

__all__ = [
    "ConvConfig",
    "RedilatedConv2d",
    "default_blocks",
    "read_dilate_settings",
    "read_module_list",
    "redilated_conv",
]


# One conv's behaviour in a variant: (scale factor, use the inflated kernel).
ConvConfig = tuple[float, bool]


class RedilatedConv2d(nn.Conv2d):
    """A Conv2d sharing the original's parameters whose behaviour is chosen by ``variant``.

    ``configs`` maps a variant name to (scale, inflated); a variant not in it runs the
    original conv unchanged (bit-identical).
    """

    def __init__(self, conv: nn.Conv2d, inflated: torch.Tensor | None) -> None:
        nn.Module.__init__(self)
        # Copy the conv's attributes and share its Parameters: the state-dict keys and the
        # weights stay those of the original module.
        self.__dict__.update({k: v for k, v in conv.__dict__.items() if not k.startswith("_")})
        self._parameters = conv._parameters
        self._buffers = dict(conv._buffers)
        self._non_persistent_buffers_set = set(conv._non_persistent_buffers_set)
        if inflated is not None:
            self.register_buffer("inflated_weight", inflated, persistent=False)
        self.configs: dict[str, ConvConfig] = {}
        self.variant = "base"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        config = self.configs.get(self.variant)
        if config is None:
            return self._conv_forward(x, self.weight, self.bias)
        scale, inflated = config
        weight = self.get_buffer("inflated_weight") if inflated else self.weight
        return redilated_conv(x, weight, self.bias, self.stride, scale)


def redilated_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, ...] | int,
    scale: float,
) -> torch.Tensor:
    """The authors' re-dilated conv (see :mod:`difforge.patches.redilate`) for one scale."""
    sh, sw = (stride, stride) if isinstance(stride, int) else (stride[0], stride[1])
    dilation = math.ceil(scale)
    factor = float(dilation / scale)
    pad = dilation * (1 + (weight.shape[-1] - 3) // 2)
    height, width = x.shape[-2], x.shape[-1]
    if factor != 1.0:
        x = F.interpolate(
            x, size=(_scaled(height, factor), _scaled(width, factor)), mode="bilinear"
        )
    y = F.conv2d(x, weight, bias, (sh, sw), pad, dilation)
    out_size = (height // sh, width // sw)
    # For integer scales and stride 1 (or even sizes) this resize is an identity: skip it.
    if factor != 1.0 or (sh > 1 and height % sh) or (sw > 1 and width % sw):
        y = F.interpolate(y, size=out_size, mode="bilinear")
    return y


def _scaled(size: Any, factor: float) -> Any:
    """round(size * factor) as the authors compute it; under torch.export (symbolic sizes)
    the same value in integer arithmetic, since ONNX export has no ``round`` of a float.

    The integer form rounds halves up where Python rounds them to even; with f = ceil(s)/s
    a tie needs size * f to land on k + 1/2 exactly (never for s = 2.5, f = 6/5).
    """
    if isinstance(size, int):
        return round(size * factor)
    frac = Fraction(factor).limit_denominator(10_000)
    return (2 * size * frac.numerator + frac.denominator) // (2 * frac.denominator)


def read_dilate_settings(path: Path) -> dict[str, float]:
    """``name:factor`` per line (``assets/dilate_settings/*.txt``, ``ndcfg_dilate_settings``)."""
    out: dict[str, float] = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        name, sep, value = line.partition(":")
        try:
            factor = float(value)
        except ValueError:
            factor = float("nan")
        if not sep or not math.isfinite(factor) or factor < 1.0:
            raise DifforgeError(
                f"{path}: line {number}: expected 'module.name:factor' with factor >= 1, "
                f"got {line!r}"
            )
        out[name.strip()] = factor
    if not out:
        raise DifforgeError(f"{path}: no 'module.name:factor' lines")
    return out


def read_module_list(path: Path) -> list[str]:
    """One module name per line (``assets/disperse_settings/*.txt``)."""
    names = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    if not names:
        raise DifforgeError(f"{path}: no module names")
    return names


def _eligible(unet: nn.Module, blocks: list[str]) -> list[str]:
    names = []
    for block in blocks:
        module = unet.get_submodule(block)
        for name, sub in module.named_modules():
            parts = name.split(".")
            leaf_ok = (
                len(parts) == 3 and parts[0] == "resnets" and parts[2] in ("conv1", "conv2")
            ) or name in ("downsamplers.0.conv", "upsamplers.0.conv")
            if leaf_ok and isinstance(sub, nn.Conv2d):
                names.append(f"{block}.{name}")
    return names


def default_blocks(unet: nn.Module) -> list[str]:
    """Every block but the highest-resolution ones (down_blocks.0 and the last up block), as
    the authors' SD1.5 1024^2 settings leave them."""
    n_down = len(getattr(unet, "down_blocks", []))
    n_up = len(getattr(unet, "up_blocks", []))
    blocks = [f"down_blocks.{i}" for i in range(1, n_down)]
    if getattr(unet, "mid_block", None) is not None:
        blocks.append("mid_block")
    blocks += [f"up_blocks.{i}" for i in range(n_up - 1)]
    return blocks


def _check_names(unet: nn.Module, names: Mapping[str, Any] | list[str], what: str) -> None:
    n_down = len(getattr(unet, "down_blocks", []))
    n_up = len(getattr(unet, "up_blocks", []))
    blocks = [f"down_blocks.{i}" for i in range(n_down)] + [f"up_blocks.{i}" for i in range(n_up)]
    if getattr(unet, "mid_block", None) is not None:
        blocks.append("mid_block")
    allowed = set(_eligible(unet, blocks))
    for name in names:
        if name not in allowed:
            raise DifforgeError(
                f"patch 'redilate': {what} names {name!r}, which is not a resnet conv1/conv2, "
                f"downsamplers.0.conv or upsamplers.0.conv of this model"
            )
