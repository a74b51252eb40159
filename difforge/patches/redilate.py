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
from typing import Any

from torch import nn

from difforge.artifact.step_plan import STEP_VARIANT, NoiseDampedGuidance, StepRule
from difforge.errors import DifforgeError
from difforge.patches import register_patch
from difforge.patches.base import PatchOption, PatchReport, replace_submodule
from difforge.patches.redilate_convs import (
    RedilatedConv2d,
    _check_names,
    _eligible,
    default_blocks,
    read_dilate_settings,
    read_module_list,
)
from difforge.patches.stepped import SteppedPatch

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


@register_patch
class ReDilatePatch(SteppedPatch):
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
            from difforge.patches.disperse import dispersion_transform, load_transform

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
                from difforge.patches.disperse import inflate_weight

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

    def step_rules(self) -> list[StepRule]:
        return [StepRule(r["variant"], r["from"], r["to"]) for r in self._rules]

    def guidance(self) -> NoiseDampedGuidance | None:
        """NDCFG: for steps in [from, to) run the weak variant (``weak_rules``) on the uncond
        half only and combine as the runtime's guidance does; the strong pass is the step's
        variant from :meth:`step_rules`. Elsewhere, standard CFG."""
        if not self.ndcfg_on:
            return None
        weak = self._weak_rules[0]["variant"] if self._weak_rules else "base"
        return NoiseDampedGuidance(
            strong=STEP_VARIANT,
            weak=weak,
            weak_rules=tuple(StepRule(r["variant"], r["from"], r["to"]) for r in self._weak_rules),
            start=0.0,
            end=step_ratio(self.options["ndcfg_tau"]),
        )
