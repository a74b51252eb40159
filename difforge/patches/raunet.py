"""HiDiffusion's RAU-Net (megvii-research/HiDiffusion ``hidiffusion/hidiffusion.py``).

Two resolution-aware changes, each active for early steps only:
- *conv*: a downsampler conv runs with stride 4, padding 2, dilation 2 (same weights), giving
  1/4 instead of 1/2 resolution; the up path comes back to the skip sizes because the UNet is
  made to pass ``upsample_size`` to every upsampler (the authors add to
  ``unet.num_upsamplers``; ``Upsample2D`` then nearest-resizes to the skip's size).
- *pool*: ``avg_pool2d(2, ceil_mode=True)`` after the first (resnet, attention) pair of a down
  block, and a bicubic resize back to the saved size in the matching up block before its last
  pair (the pair that concatenates the unpooled downsampler skip).

Key mapping. SD1.5 (``sd15_hidiffusion_key``): conv = ``down_blocks.0.downsamplers.0.conv``
(T1), pool = ``down_blocks.1`` / restore = ``up_blocks.2`` after pair 1 (T2). On a UNet with
n down blocks the same roles are ``down_blocks.0`` downsampler, ``down_blocks.1`` and
``up_blocks.{n-2}``; for the 2-block tiny-sd that is ``down_blocks.0.downsamplers.0.conv``,
``down_blocks.1`` (its only pair) and ``up_blocks.0`` after pair 0 (its upsampler is the one
that restores full resolution). SDXL (``sdxl_hidiffusion_key``, first block without
attention): pool = ``down_blocks.1`` / ``up_blocks.{n-2}`` with T1, conv =
``down_blocks.1.downsamplers.0.conv`` with T2; below 512 latent pixels the authors'
"aggressive" schedule: pool for steps [int(8/50 S), int(T1_ratio S)), conv for < int(8/50 S).

T1 = int(S * T1_ratio), T2 = int(S * T2_ratio), ratios by resolution as the authors'
``switching_threshold_ratio_dict``: SD1.5 latent < 256: (0.4, 0.0), else (0.7, 0.3); SDXL
latent < 512: (0.4, 0.0) aggressive, else (0.7, 0.3). Each on/off combination is a variant;
:meth:`RAUNetPatch.step_rules` encodes the thresholds (no step counter in the graph, so the
authors' counter that breaks under unbatched CFG does not apply).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from difforge.artifact.step_plan import StepRule
from difforge.errors import DifforgeError
from difforge.patches import register_patch
from difforge.patches.base import PatchOption, PatchReport, replace_submodule
from difforge.patches.stepped import SteppedPatch

__all__ = ["T1_T2_RATIOS", "RAUNetPatch", "RauConv2d"]

# (layout, regime) -> (T1_ratio, T2_ratio), the authors' switching_threshold_ratio_dict.
T1_T2_RATIOS: dict[tuple[str, str], tuple[float, float]] = {
    ("sd15", "1024"): (0.4, 0.0),
    ("sd15", "2048"): (0.7, 0.3),
    ("sdxl", "2048"): (0.4, 0.0),
    ("sdxl", "4096"): (0.7, 0.3),
}
#: latent side from which the authors switch to the high-resolution schedule, per layout
REGIME_SWITCH = {"sd15": 256, "sdxl": 512}
AGGRESSIVE_STEP = 8  # of 50, the authors' aggressive_step
FORCE_UPSAMPLERS = 12  # added to unet.num_upsamplers: every latent size forwards upsample_size

VARIANTS = {
    "base": (False, False),
    "rau_conv": (True, False),
    "rau_pool": (False, True),
    "rau_full": (True, True),
}


class RauConv2d(nn.Conv2d):
    """A downsampler Conv2d sharing the original's parameters; ``active`` switches it to
    stride 4, padding 2, dilation 2 (the authors' ``downsampler_block``)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        nn.Module.__init__(self)
        self.__dict__.update({k: v for k, v in conv.__dict__.items() if not k.startswith("_")})
        self._parameters = conv._parameters
        self._buffers = dict(conv._buffers)
        self._non_persistent_buffers_set = set(conv._non_persistent_buffers_set)
        self.active = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return self._conv_forward(x, self.weight, self.bias)
        return F.conv2d(x, self.weight, self.bias, (4, 4), (2, 2), (2, 2), self.groups)


@register_patch
class RAUNetPatch(SteppedPatch):
    """HiDiffusion RAU-Net: resolution-aware down/upsampling for early steps."""

    name = "raunet"
    summary = "HiDiffusion RAU-Net: stride-4 dilated downsampler and pooled block, early steps"
    targets = ("UNet2DConditionModel",)
    option_specs = (
        PatchOption(
            "resolution",
            "int",
            None,
            "image side in pixels (min of H, W) choosing T1/T2; default: the UNet's",
            minimum=8,
        ),
        PatchOption("layout", "str", "auto", "key mapping", choices=("auto", "sd15", "sdxl")),
        PatchOption("t1_ratio", "float", None, "override T1_ratio", minimum=0.0, maximum=1.0),
        PatchOption("t2_ratio", "float", None, "override T2_ratio", minimum=0.0, maximum=1.0),
        PatchOption(
            "aggressive", "str", "auto", "SDXL aggressive schedule", choices=("auto", "on", "off")
        ),
        PatchOption("vae_factor", "int", 8, "pixels per latent pixel", minimum=1),
    )

    #: the build's (min, max) pixel sizes when the schedule comes from the build
    _build_range: tuple[int, int] | None = None

    def bind_resolution(self, lo: int, default: int, hi: int) -> None:
        # Only a schedule taken from the build (not one the user fixed) must hold across it.
        self._build_range = (lo, hi) if self.options["resolution"] is None else None
        super().bind_resolution(lo, default, hi)

    def _validate(self) -> None:
        self._build_range = None
        self._variants: list[str] = ["base"]
        self._rules: list[dict[str, Any]] = []
        self._conv: RauConv2d | None = None
        self._unet: nn.Module | None = None
        self._pool_on = False
        self._base_upsamplers = 0
        self._saved: dict[str, Any] = {}

    # ------------------------------------------------------------------ schedule

    def schedule(self, layout: str, latent: int) -> dict[str, Any]:
        """{"conv": (from, to), "pool": (from, to)} ratios plus the choices made."""
        opts = self.options
        low, high = ("1024", "2048") if layout == "sd15" else ("2048", "4096")
        regime = low if latent < REGIME_SWITCH[layout] else high
        t1, t2 = T1_T2_RATIOS[(layout, regime)]
        t1 = opts["t1_ratio"] if opts["t1_ratio"] is not None else t1
        t2 = opts["t2_ratio"] if opts["t2_ratio"] is not None else t2
        aggressive = {"on": True, "off": False}.get(
            opts["aggressive"], layout == "sdxl" and regime == "2048"
        )
        if layout == "sd15":
            conv, pool = (0.0, t1), (0.0, t2)
        elif aggressive:
            start = AGGRESSIVE_STEP / 50
            conv, pool = (0.0, start), (start, t1)
        else:
            conv, pool = (0.0, t2), (0.0, t1)
        return {
            "conv": conv,
            "pool": pool,
            "layout": layout,
            "regime": regime,
            "t1_ratio": t1,
            "t2_ratio": t2,
            "aggressive": aggressive,
        }

    @staticmethod
    def _rules_from(conv: tuple[float, float], pool: tuple[float, float]) -> list[dict[str, Any]]:
        # Breakpoints are the ratios themselves so that int(r * N) is the authors' int(N * r).
        points = sorted({0.0, 1.0, *conv, *pool})
        rules: list[dict[str, Any]] = []
        for lo, hi in itertools.pairwise(points):
            if hi <= lo:
                continue
            mid = (lo + hi) / 2
            on = (conv[0] <= mid < conv[1], pool[0] <= mid < pool[1])
            name = next(k for k, v in VARIANTS.items() if v == on)
            if name == "base":
                continue
            if rules and rules[-1]["variant"] == name and rules[-1]["to"] == lo:
                rules[-1]["to"] = hi
            else:
                rules.append({"variant": name, "from": lo, "to": hi})
        return rules

    def _check_one_regime(self, layout: str, lo_px: int, hi_px: int) -> None:
        """The authors pick T1/T2 from the size being generated; an artifact bakes one
        schedule, so its resolutions must all fall on one side of their switch."""
        factor = self.options["vae_factor"]
        low, high = (self.schedule(layout, px // factor) for px in (lo_px, hi_px))
        if low["regime"] != high["regime"]:
            switch = REGIME_SWITCH[layout] * factor
            raise DifforgeError(
                f"patch 'raunet': the build's resolutions {lo_px}..{hi_px} px cross the "
                f"authors' switch at {switch} px between two schedules (T1/T2 ratios "
                f"{low['t1_ratio']}/{low['t2_ratio']} below, {high['t1_ratio']}/"
                f"{high['t2_ratio']} from there); build one artifact on each side, or fix "
                "one schedule with raunet:resolution=PX"
            )

    # ------------------------------------------------------------------ apply

    def _apply(self, denoiser: nn.Module) -> PatchReport:
        opts = self.options
        down = getattr(denoiser, "down_blocks", None)
        up = getattr(denoiser, "up_blocks", None)
        if down is None or up is None or len(down) < 2 or len(up) != len(down):
            raise DifforgeError("patch 'raunet' needs a UNet with at least 2 down and up blocks")
        layout = opts["layout"]
        if layout == "auto":
            layout = "sd15" if hasattr(down[0], "attentions") else "sdxl"
        if opts["resolution"] is not None:
            latent = opts["resolution"] // opts["vae_factor"]
        else:
            latent = int(getattr(denoiser, "config").sample_size)  # noqa: B009
        plan = self.schedule(layout, latent)
        if self._build_range is not None:
            self._check_one_regime(layout, *self._build_range)
        self._rules = self._rules_from(plan["conv"], plan["pool"])
        self._variants = ["base"] + [
            v for v in VARIANTS if v != "base" and any(r["variant"] == v for r in self._rules)
        ]

        n = len(down)
        conv_block = 0 if layout == "sd15" else 1
        conv_name = f"down_blocks.{conv_block}.downsamplers.0.conv"
        pool_block, restore_block = 1, n - 2
        try:
            old_conv = denoiser.get_submodule(conv_name)
        except AttributeError:
            raise DifforgeError(f"patch 'raunet': this UNet has no {conv_name}") from None
        assert isinstance(old_conv, nn.Conv2d)
        pool_attn = getattr(down[pool_block], "attentions", None)
        restore_attn = getattr(up[restore_block], "attentions", None)
        if not pool_attn or not restore_attn or len(restore_attn) < 2:
            raise DifforgeError(
                f"patch 'raunet': down_blocks.{pool_block} and up_blocks.{restore_block} must "
                "be cross-attention blocks (the up block with at least 2 pairs)"
            )
        new_conv = RauConv2d(old_conv)
        replace_submodule(denoiser, conv_name, new_conv)
        self._conv = new_conv
        self._unet = denoiser
        self._base_upsamplers = int(getattr(denoiser, "num_upsamplers"))  # noqa: B009

        def undo_conv() -> None:
            replace_submodule(denoiser, conv_name, old_conv)
            setattr(denoiser, "num_upsamplers", self._base_upsamplers)  # noqa: B010
            self._conv = None

        self._on_undo(undo_conv)

        saved = self._saved

        def pool_hook(_m: nn.Module, _args: Any, output: Any) -> Any:
            if not self._pool_on:
                return None
            hidden = output[0]
            saved["size"] = (hidden.shape[-2], hidden.shape[-1])
            return (F.avg_pool2d(hidden, kernel_size=(2, 2), ceil_mode=True), *output[1:])

        def restore_hook(_m: nn.Module, _args: Any, output: Any) -> Any:
            if not self._pool_on:
                return None
            hidden = F.interpolate(output[0], size=saved["size"], mode="bicubic")
            return (hidden, *output[1:])

        handles = [
            pool_attn[0].register_forward_hook(pool_hook),
            restore_attn[len(restore_attn) - 2].register_forward_hook(restore_hook),
        ]

        def undo_hooks() -> None:
            for handle in handles:
                handle.remove()

        self._on_undo(undo_hooks)
        replaced = [
            conv_name,
            f"down_blocks.{pool_block}.attentions.0",
            f"up_blocks.{restore_block}.attentions.{len(restore_attn) - 2}",
        ]
        notes = [
            f"layout {layout}, latent {latent}, regime {plan['regime']}, "
            f"T1_ratio {plan['t1_ratio']}, T2_ratio {plan['t2_ratio']}, "
            f"aggressive {plan['aggressive']}; variants {', '.join(self._variants)}",
        ]
        return PatchReport(patch=self.name, options=dict(opts), replaced=replaced, notes=notes)

    # ------------------------------------------------------------------ variants

    def variants(self) -> list[str]:
        return list(self._variants)

    def set_variant(self, name: str) -> None:
        if name not in self._variants or self._conv is None or self._unet is None:
            raise DifforgeError(
                f"patch 'raunet' has no variant {name!r} (it has {', '.join(self._variants)})"
            )
        conv_on, pool_on = VARIANTS[name]
        self._conv.active = conv_on
        self._pool_on = pool_on
        # Forced upsample sizes only where the resolution changes, so "base" is untouched.
        extra = FORCE_UPSAMPLERS if (conv_on or pool_on) else 0
        setattr(self._unet, "num_upsamplers", self._base_upsamplers + extra)  # noqa: B010

    def step_rules(self) -> list[StepRule]:
        return [StepRule(r["variant"], r["from"], r["to"]) for r in self._rules]
