"""DeepCache (Ma, Fang and Wang, CVPR 2024): reuse a U-Net's deep features between steps.

What the authors' ``DeepCacheSDHelper`` (``DeepCache/extension/deepcache.py``) computes, for
``cache_branch_id`` b (block ``b // 3``, layer ``b % 3``): on a full step every module runs
and its output is cached; on the other steps every down module at or after (block, layer),
the mid block, and every up module deeper than the branch return their cached output, the
rest run. Of the cached outputs, exactly one reaches a module that runs: the input of the
first up resnet the branch recomputes (up block ``block`` counted from the output end, its
resnet ``layer`` counted from the end), i.e. the output of the up module just before it. The
skip connections that resnet and the later ones concatenate come from down modules that run
on every step. So the method is two graphs sharing one weight file:

- ``full(x, t, c) -> (eps, deepcache_feature)``: the U-Net, also emitting that tensor;
- ``shallow(x, t, c, deepcache_feature) -> eps``: the same U-Net with that module's output
  replaced by the tensor; the exporter's dead-code elimination drops what only fed it (the
  deep down blocks, the mid block and the deep up blocks), leaving ``conv_in``, the shallow
  down modules, the branch's up modules and ``conv_out``.

The step plan runs ``full`` on refresh steps (``interval``, ``start``; or the authors'
non-uniform ``spacing=quad`` around ``center``) and ``shallow`` on the others, and carries the
feature from the last full step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from difforge.artifact.interval_rule import IntervalRule
from difforge.artifact.step_plan import Rule
from difforge.errors import DifforgeError
from difforge.patches import register_patch
from difforge.patches.base import PatchOption, PatchReport
from difforge.patches.stepped import StateTensor, SteppedPatch

FEATURE = "deepcache_feature"
VARIANTS = ("full", "shallow")


def _channels(module: nn.Module) -> int:
    """Output channels of an up-path module: a resnet, a transformer, a block."""
    resnets: Any = getattr(module, "resnets", None)
    if resnets is not None:
        return int(resnets[-1].out_channels)
    for attr in ("out_channels", "in_channels"):  # a transformer keeps its width
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    raise DifforgeError(f"deepcache: cannot tell the channels of {type(module).__name__}")


def branch_point(unet: nn.Module, branch: int) -> tuple[str, int, int]:
    """(module name, channels, size divisor) of the cached tensor the branch's first
    recomputed up resnet reads, for ``cache_branch_id`` ``branch``."""
    block, layer = branch // 3, branch % 3
    ups: Any = unet.up_blocks
    count = len(ups)
    if block >= count:
        raise DifforgeError(
            f"deepcache: branch {branch} is block {block}, but this U-Net has {count} up blocks "
            f"(branches 0 to {3 * count - 1} at most)"
        )
    index = count - 1 - block
    up = ups[index]
    # the first resnet the branch recomputes (a layer past the block's resnets recomputes
    # them all, as the authors' comparisons do)
    first = max(len(up.resnets) - 1 - layer, 0)
    if first >= 1:
        attentions = getattr(up, "attentions", None)
        name = f"up_blocks.{index}.{'attentions' if attentions else 'resnets'}.{first - 1}"
        return name, int(up.resnets[first - 1].out_channels), 2**block
    if index >= 1:
        return f"up_blocks.{index - 1}", _channels(ups[index - 1]), 2**block
    mid = getattr(unet, "mid_block", None)
    if mid is None:
        raise DifforgeError(
            f"deepcache: branch {branch} recomputes every up block, which would start from the "
            "mid block, and this U-Net has none; use a smaller branch"
        )
    return "mid_block", _channels(mid), 2**block


@register_patch
class DeepCachePatch(SteppedPatch):
    """DeepCache: full U-Net on refresh steps, its shallow branch on the others."""

    name = "deepcache"
    summary = "DeepCache: the deep U-Net features of the last full step reused in between"
    targets = ("UNet2DConditionModel",)
    main_option = "interval"
    option_specs = (
        PatchOption("interval", "int", 3, "a full step every N steps (1: every step)", 1, 1000),
        PatchOption("branch", "int", 0, "cache_branch_id: block*3 + layer recomputed", 0, 99),
        PatchOption("start", "int", 0, "steps before this one all run in full", 0, 1000),
        PatchOption(
            "spacing",
            "str",
            "uniform",
            "refresh steps every `interval`, or the authors' quadratic schedule",
            choices=("uniform", "quad"),
        ),
        PatchOption("center", "int", 15, "spacing=quad only: the step it clusters around", 0, 1000),
        PatchOption("power", "float", 1.4, "spacing=quad only: the starting power", 1.01, 4.0),
    )

    def _validate(self) -> None:
        self._variant = VARIANTS[0]
        self._point: tuple[str, int, int] | None = None
        self._cache: torch.Tensor | None = None
        self._bound: torch.Tensor | None = None
        o = self.options
        if o["spacing"] == "quad" and o["start"]:
            raise DifforgeError("patch 'deepcache': start applies to spacing=uniform only")

    def _apply(self, denoiser: nn.Module) -> PatchReport:
        name, channels, divisor = branch_point(denoiser, self.options["branch"])
        self._point = (name, channels, divisor)
        handle = denoiser.get_submodule(name).register_forward_hook(self._hook)

        def undo() -> None:
            handle.remove()
            self._point, self._cache, self._bound = None, None, None
            self._variant = VARIANTS[0]

        self._on_undo(undo)
        o = self.options
        when = (
            f"every {o['interval']} steps from step {o['start']}"
            if o["spacing"] == "uniform"
            else f"{o['interval']}x fewer, spaced quadratically around step {o['center']}"
        )
        notes = [
            f"cached: the output of {name} ({channels} channels, latent size / {divisor}); "
            f"full steps {when}"
        ]
        return PatchReport(self.name, dict(self.options), [name], notes)

    def _hook(self, _module: nn.Module, _args: Any, output: Any) -> Any:
        """Full: keep the output. Shallow: replace it with the bound state (the graph's input,
        while exporting or running a graph's PyTorch twin) or, in a plain PyTorch sampling
        loop, with what the last full step kept, as the authors' helper does."""
        value = output[0] if isinstance(output, tuple) else output
        if self._variant == "full":
            self._cache = value
            return None
        state = self._bound if self._bound is not None else self._cache
        if state is None:
            raise DifforgeError("deepcache: a shallow step ran before any full step")
        return (state, *output[1:]) if isinstance(output, tuple) else state

    # ------------------------------------------------------------------ variants

    def variants(self) -> list[str]:
        return list(VARIANTS)

    def set_variant(self, name: str) -> None:
        if name not in VARIANTS:
            raise DifforgeError(f"patch 'deepcache' has no variant {name!r} (it has full, shallow)")
        self._variant = name

    def step_rules(self) -> list[Rule]:
        o = self.options
        return [IntervalRule("shallow", o["interval"], o["start"], o["spacing"], o["center"],
                             o["power"])]

    # ------------------------------------------------------------------ state

    def _state(self) -> StateTensor:
        if self._point is None:
            raise DifforgeError("patch 'deepcache' is not applied")
        return StateTensor(FEATURE, self._point[1], self._point[2])

    def state_inputs(self, variant: str) -> list[StateTensor]:
        return [self._state()] if variant == "shallow" else []

    def state_outputs(self, variant: str) -> list[StateTensor]:
        return [self._state()] if variant == "full" else []

    def carry(self) -> dict[str, str]:
        return {FEATURE: FEATURE}

    def bind_state(self, inputs: dict[str, torch.Tensor] | None) -> None:
        self._bound = None if not inputs else inputs[FEATURE]

    def take_state(self) -> dict[str, torch.Tensor]:
        if self._cache is None:
            raise DifforgeError("deepcache: no full step has run")
        return {FEATURE: self._cache}
