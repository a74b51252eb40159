"""A denoiser variant with the state tensors its stepped patch carries between steps.

The variant's graph takes the state inputs after the denoiser's own inputs and emits the state
outputs after ``noise_pred``; each state tensor shares the sample's batch axis and its spatial
axes divided by the level it lives at (``height/2``), so the runner checks it against the
sample and torch.export ties it to the same symbols.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from difforge.exporter.configs.common import Component
from difforge.exporter.specs import Tensor
from difforge.patches.stepped import StateTensor, SteppedPatch


def _tensor(state: StateTensor) -> Tensor:
    def level(axis: str) -> str:
        return axis if state.divisor == 1 else f"{axis}/{state.divisor}"

    return Tensor(state.name, "float32", ("batch", state.channels, level("height"), level("width")))


class StatefulDenoiser(torch.nn.Module):
    """``inner`` with the patch's state inputs bound for the forward and its state outputs
    returned after the noise prediction."""

    def __init__(
        self, inner: torch.nn.Module, patch: SteppedPatch, inputs: list[str], outputs: list[str]
    ) -> None:
        super().__init__()
        self.inner = inner
        self.patch = patch
        self.state_in = inputs
        self.state_out = outputs

    def forward(self, *args: torch.Tensor) -> Any:
        split = len(args) - len(self.state_in)
        self.patch.bind_state(dict(zip(self.state_in, args[split:], strict=True)))
        try:
            out = self.inner(*args[:split])
        finally:
            self.patch.bind_state(None)
        if not self.state_out:
            return out
        taken = self.patch.take_state()
        return (out, *(taken[name] for name in self.state_out))


def with_state(component: Component, patch: SteppedPatch, variant: str) -> Component:
    """``component`` as ``variant`` exports it: unchanged if the variant carries no state."""
    inputs, outputs = patch.state_inputs(variant), patch.state_outputs(variant)
    if not inputs and not outputs:
        return component
    spec = component.spec
    spec = replace(
        spec,
        inputs=spec.inputs + tuple(_tensor(s) for s in inputs),
        outputs=spec.outputs + tuple(_tensor(s) for s in outputs),
    )
    module = StatefulDenoiser(
        component.module, patch, [s.name for s in inputs], [s.name for s in outputs]
    )
    return Component(spec, module)
