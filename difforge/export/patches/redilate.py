"""ScaleCrafter re-dilation (YingqingHe/ScaleCrafter ``model.py``, ``text2image.py``).

For a scale s on a conv with kernel k (``ReDilateConvProcessor``)::

    d = ceil(s); f = d / s
    x1 = interpolate(x, (round(H f), round(W f)), bilinear)   # skipped when f == 1
    y  = conv(x1, W, b, stride, dilation=d, padding=d * (1 + (k - 3) // 2))
    out = interpolate(y, (int(H / stride), int(W / stride)), bilinear)  # skipped if same size

The authors patch the listed convs for steps i < tau of 50; difforge bakes no step test
into a graph: each distinct per-step configuration of the patched convs is a *variant*
(one exported graph each, weights shared), and :meth:`ReDilatePatch.step_rules` says which
runs when. Noise-damped CFG adds "weak" variants and a :meth:`ReDilatePatch.guidance` entry;
dispersion (``disperse``) adds variants whose listed convs use an inflated 5x5 kernel with
half the dilation, as ``text2image.py`` does for steps i < inflate_tau.
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
from difforge.export.patches import register_patch
from difforge.export.patches.base import Patch, PatchOption, PatchReport, replace_submodule

__all__ = [
    "AUTHORS_STEPS",
    "ReDilatePatch",
    "RedilatedConv2d",
    "default_blocks",
    "read_dilate_settings",
    "read_module_list",
    "step_ratio",
]

AUTHORS_STEPS = 50  # tau counts steps of the authors' 50-step DDIM schedule

# One conv's behaviour in a variant: (scale factor, use the inflated kernel).
ConvConfig = tuple[float, bool]


def step_ratio(step: int, total: int = AUTHORS_STEPS) -> float:
    """step/total as a float r with int(r * N) == step * N // total for every N <= 1000.

    The runtime evaluates ``int(ratio * N)``; 29/50 * 50 is 28.999999999999996 in floats, so
    the ratio is nudged up by ulps until it floors right.
    """
    ratio = step / total
    for _ in range(64):
        if all(int(ratio * n) == step * n // total for n in range(1, 1001)):
            return ratio
        ratio = math.nextafter(ratio, math.inf)
    raise AssertionError(f"no float ratio for {step}/{total}")  # pragma: no cover


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
    """The authors' re-dilated conv (module docstring) for one scale."""
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


@register_patch
class ReDilatePatch(Patch):
    """ScaleCrafter re-dilation, with optional noise-damped CFG and dispersion."""

    name = "redilate"
    summary = "ScaleCrafter: re-dilated convs for early steps (+ NDCFG weak pass, dispersion)"
    targets = ("UNet2DConditionModel",)
    main_option = "settings"
    option_specs = (
        PatchOption("scale", "float", 2.0, "dilation scale s (d = ceil(s))", minimum=1.0),
        PatchOption("tau", "int", 30, "active for steps i < tau of 50", minimum=0, maximum=50),
        PatchOption("progressive", "bool", False, "d_i = max(ceil(d (tau - i) / tau), 2)"),
        PatchOption("settings", "path", None, "authors' dilate_settings file (name:factor)"),
        PatchOption(
            "weak_scale",
            "float",
            None,
            "NDCFG: scale of the weak pass (enables NDCFG)",
            minimum=1.0,
        ),
        PatchOption("weak_settings", "path", None, "NDCFG: authors' ndcfg_dilate_settings file"),
        PatchOption(
            "ndcfg_tau", "int", 35, "NDCFG for steps i < ndcfg_tau of 50", minimum=0, maximum=50
        ),
        PatchOption("disperse", "bool", False, "inflate the re-dilated 3x3 convs to 5x5"),
        PatchOption("disperse_settings", "path", None, "authors' disperse_settings (names)"),
        PatchOption("transform", "path", None, "dispersion R (.mat, key R); default: computed"),
        PatchOption(
            "inflate_tau",
            "int",
            None,
            "dispersion for steps i < inflate_tau of 50",
            minimum=0,
            maximum=50,
        ),
    )

    def _validate(self) -> None:
        self.ndcfg_on = (
            self.options["weak_scale"] is not None or self.options["weak_settings"] is not None
        )
        self.disperse_on = bool(self.options["disperse"]) or (
            self.options["disperse_settings"] is not None
        )
        self._variants: list[str] = ["base"]
        self._rules: list[dict[str, Any]] = []
        self._weak_rules: list[dict[str, Any]] = []
        self._convs: dict[str, RedilatedConv2d] = {}

    # ------------------------------------------------------------------ schedule

    def _step_config(
        self,
        factors: Mapping[str, float],
        tau: int,
        step: int,
        inflate: set[str],
        inflate_tau: int,
    ) -> tuple[tuple[str, float, bool], ...]:
        """Per-conv (scale, inflated) at ``step`` of 50, as text2image.py computes it."""
        if step >= tau:
            return ()
        out = []
        for name in sorted(factors):
            dilate = factors[name]
            if self.options["progressive"]:
                dilate = max(math.ceil(dilate * ((tau - step) / tau)), 2)
            inflated = step < inflate_tau and name in inflate
            if inflated:
                dilate = dilate / 2
            out.append((name, float(dilate), inflated))
        return tuple(out)

    def _plan(
        self, strong: Mapping[str, float], weak: Mapping[str, float] | None, inflate: set[str]
    ) -> dict[tuple[tuple[str, float, bool], ...], str]:
        """Assign variant names to distinct configurations and build the step rules."""
        opts = self.options
        inflate_tau = opts["inflate_tau"] if opts["inflate_tau"] is not None else opts["tau"]
        if not self.disperse_on:
            inflate_tau = 0
        names: dict[tuple[tuple[str, float, bool], ...], str] = {(): "base"}
        self._variants = ["base"]

        def name_of(config: tuple[tuple[str, float, bool], ...], prefix: str) -> str:
            if config not in names:
                values = sorted({f"{s:g}" for _, s, _ in config}, key=float, reverse=True)
                label = prefix + "d" + "-".join(values)
                if any(flag for _, _, flag in config):
                    label += "_disp"
                label = label.replace(".", "p")
                while label in self._variants:
                    label += "x"
                names[config] = label
                self._variants.append(label)
            return names[config]

        def rules_for(factors: Mapping[str, float], tau: int, prefix: str) -> list[dict[str, Any]]:
            rules: list[dict[str, Any]] = []
            start = 0
            configs = [
                self._step_config(factors, tau, i, inflate, inflate_tau)
                for i in range(AUTHORS_STEPS)
            ]
            for i in range(1, AUTHORS_STEPS + 1):
                if i == AUTHORS_STEPS or configs[i] != configs[start]:
                    if configs[start]:
                        rules.append(
                            {
                                "variant": name_of(configs[start], prefix),
                                "from": step_ratio(start),
                                "to": step_ratio(i),
                            }
                        )
                    start = i
            return rules

        self._rules = rules_for(strong, opts["tau"], "")
        self._weak_rules = rules_for(weak, opts["ndcfg_tau"], "weak_") if weak else []
        # Readable names in the common case of one re-dilated (and one weak) configuration.
        strong_names = {r["variant"] for r in self._rules}
        weak_names = {r["variant"] for r in self._weak_rules} - strong_names
        renames = {}
        if len(strong_names) == 1:
            renames[next(iter(strong_names))] = "redilated"
        if len(weak_names) == 1:
            renames[next(iter(weak_names))] = "weak"
        if renames:
            for config, label in list(names.items()):
                names[config] = renames.get(label, label)
            self._variants = [renames.get(v, v) for v in self._variants]
            for rule in self._rules + self._weak_rules:
                rule["variant"] = renames.get(rule["variant"], rule["variant"])
        return names

    # ------------------------------------------------------------------ apply

    def _apply(self, denoiser: nn.Module) -> PatchReport:
        opts = self.options
        if opts["settings"] is not None:
            strong = read_dilate_settings(opts["settings"])
        else:
            convs = _eligible(denoiser, default_blocks(denoiser))
            strong = {name: float(opts["scale"]) for name in convs}
        _check_names(denoiser, strong, "settings")
        weak: dict[str, float] | None = None
        if self.ndcfg_on:
            if opts["weak_settings"] is not None:
                weak = read_dilate_settings(opts["weak_settings"])
            else:
                weak = {name: float(opts["weak_scale"]) for name in strong}
            _check_names(denoiser, weak, "weak_settings")
        inflate: set[str] = set()
        transform = None
        if self.disperse_on:
            if opts["disperse_settings"] is not None:
                inflate = set(read_module_list(opts["disperse_settings"]))
            else:
                inflate = set(strong)
            _check_names(denoiser, sorted(inflate), "disperse_settings")
            from difforge.export.patches.disperse import dispersion_transform, load_transform

            transform = (
                load_transform(opts["transform"])
                if opts["transform"] is not None
                else dispersion_transform()
            )
        names = self._plan(strong, weak, inflate)

        touched = sorted(set(strong) | set(weak or {}) | inflate)
        for name in touched:
            old = denoiser.get_submodule(name)
            assert isinstance(old, nn.Conv2d)
            inflated = None
            if name in inflate:
                if tuple(old.kernel_size) != (3, 3):
                    raise DifforgeError(f"patch 'redilate': {name} is not a 3x3 conv to inflate")
                from difforge.export.patches.disperse import inflate_weight

                assert transform is not None
                inflated = inflate_weight(old.weight.detach(), transform).clone()
            new = RedilatedConv2d(old, inflated)
            for config, label in names.items():
                for conv_name, scale, flag in config:
                    if conv_name == name:
                        new.configs[label] = (scale, flag)
            replace_submodule(denoiser, name, new)
            self._convs[name] = new

            def restore(name: str = name, old: nn.Module = old) -> None:
                replace_submodule(denoiser, name, old)

            self._on_undo(restore)
        self._on_undo(self._convs.clear)
        notes = [f"variants: {', '.join(self._variants)}"]
        if self.disperse_on:
            notes.append("dispersed convs pad 2*dilation (authors' inflate_kernels keeps pad 1)")
        return PatchReport(patch=self.name, options=dict(opts), replaced=touched, notes=notes)

    # ------------------------------------------------------------------ variants

    def variants(self) -> list[str]:
        return list(self._variants)

    def set_variant(self, name: str) -> None:
        if name not in self._variants:
            raise DifforgeError(
                f"patch 'redilate' has no variant {name!r} (it has {', '.join(self._variants)})"
            )
        for conv in self._convs.values():
            conv.variant = name

    def step_rules(self) -> list[dict[str, Any]]:
        return [dict(rule) for rule in self._rules]

    def guidance(self) -> dict[str, Any] | None:
        """NDCFG: for steps in [from, to) run the weak variant (``weak_rules``) on the uncond
        half only and combine with :func:`difforge.runtime.guidance.ndcfg`; the strong pass is
        the step's variant from :meth:`step_rules`. Elsewhere, standard CFG."""
        if not self.ndcfg_on:
            return None
        weak = self._weak_rules[0]["variant"] if self._weak_rules else "base"
        return {
            "mode": "ndcfg",
            "strong": "step_rules",
            "weak": weak,
            "weak_rules": [dict(rule) for rule in self._weak_rules],
            "from": 0.0,
            "to": step_ratio(self.options["ndcfg_tau"]),
        }
