"""A denoiser variant with the state tensors its stepped patch carries between steps.

The variant's graph takes the state inputs after the denoiser's own inputs and emits the state
outputs after ``noise_pred``; each state tensor shares the sample's batch axis and its spatial
axes divided by the level it lives at (``height/2``), so the runner checks it against the
sample and torch.export ties it to the same symbols.

A variant computed from state alone (:meth:`SteppedPatch.takes_sample` false) has no
``sample`` input: the module is given zeros of the sample's shape, read from a state tensor at
the latent's own size, which nothing uses once the patch replaces what read them (the
exporter's dead-code elimination drops them). Its batch range is the denoiser's times the
steps one call may cover (:meth:`SteppedPatch.batch_steps`).

The variant a token selection names (RAS) also takes the indices of the tokens it
recomputes, ``[batch, active]`` int64, before its state inputs; ``active`` is an axis of its
own, from one token to every token of the largest latent.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from difforge.errors import DifforgeError
from difforge.exporter.configs.common import Component
from difforge.exporter.specs import Axis, Tensor
from difforge.patches.stepped import StateTensor, SteppedPatch


def _tensor(state: StateTensor) -> Tensor:
    def level(axis: str) -> str:
        return axis if state.divisor == 1 else f"{axis}/{state.divisor}"

    return Tensor(state.name, "float32", ("batch", state.channels, level("height"), level("width")))


class StatefulDenoiser(torch.nn.Module):
    """``inner`` with the patch's state inputs bound for the forward and its state outputs
    returned after the noise prediction. ``sample_channels`` (a sample-free variant): the
    forward is given zeros of the sample's shape, taken from state input ``shape_from``."""

    def __init__(
        self,
        inner: torch.nn.Module,
        patch: SteppedPatch,
        inputs: list[str],
        outputs: list[str],
        sample_channels: int = 0,
        shape_from: int = 0,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.patch = patch
        self.state_in = inputs
        self.state_out = outputs
        self.sample_channels = sample_channels
        self.shape_from = shape_from

    def forward(self, *args: torch.Tensor) -> Any:
        split = len(args) - len(self.state_in)
        own, state = list(args[:split]), args[split:]
        if self.sample_channels:
            like = state[self.shape_from]
            zeros = like.new_zeros((like.shape[0], self.sample_channels, *like.shape[2:]))
            own.insert(0, zeros)
        self.patch.bind_state(dict(zip(self.state_in, state, strict=True)))
        try:
            out = self.inner(*own)
        finally:
            self.patch.bind_state(None)
        if not self.state_out:
            return out
        taken = self.patch.take_state()
        return (out, *(taken[name] for name in self.state_out))


def _selection(patch: SteppedPatch, variant: str, axes: dict[str, Axis]) -> list[Tensor]:
    """The token-index input of the variant a token selection names, with its axis."""
    selection = patch.token_selection()
    if selection is None or selection.variant != variant:
        return []
    p = selection.patch

    def tokens(which: str) -> int:
        return (getattr(axes["height"], which) // p) * (getattr(axes["width"], which) // p)

    axes["active"] = Axis(1, max(1, selection.active_count(tokens("opt"))), tokens("max"))
    return [Tensor(selection.input, "int64", ("batch", "active"), ("tokens", p))]


def with_state(component: Component, patch: SteppedPatch, variant: str) -> Component:
    """``component`` as ``variant`` exports it: unchanged if the variant carries no state."""
    inputs, outputs = patch.state_inputs(variant), patch.state_outputs(variant)
    if not inputs and not outputs:
        return component
    spec = component.spec
    own = spec.inputs
    sample_channels, shape_from = 0, 0
    axes = dict(spec.axes)
    indices = _selection(patch, variant, axes)
    if not patch.takes_sample(variant):
        if own[0].name != "sample":
            raise DifforgeError(f"{spec.role}: a sample-free variant needs `sample` first")
        full = [len(indices) + i for i, s in enumerate(inputs) if s.divisor == 1]
        if not full:
            raise DifforgeError(
                f"patch {patch.name!r}: variant {variant!r} takes no sample, so it needs a "
                "state input at the latent's own size to give its output's size"
            )
        sample_channels, shape_from = int(own[0].dims[1]), full[0]
        own = own[1:]
        factor = patch.batch_steps(variant)
        batch = axes["batch"]
        axes["batch"] = Axis(batch.min, batch.opt, batch.max * factor, batch.multiple)
    spec = replace(
        spec,
        inputs=own + tuple(indices) + tuple(_tensor(s) for s in inputs),
        outputs=spec.outputs + tuple(_tensor(s) for s in outputs),
        axes=axes,
    )
    module = StatefulDenoiser(
        component.module,
        patch,
        [t.name for t in indices] + [s.name for s in inputs],
        [s.name for s in outputs],
        sample_channels,
        shape_from,
    )
    return Component(spec, module)
