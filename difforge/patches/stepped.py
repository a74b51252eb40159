"""The stepped-patch contract: a patch whose rewrite depends on the denoising step.

ScaleCrafter re-dilates convolutions for steps i < τ, HiDiffusion's RAU-Net changes its
down/upsampling below T1/T2: the authors branch on the step inside the forward, which a graph
cannot. Such a patch declares named variants of the model (the first is the one the other
steps run), switches the live model between them for export, and says in step rules (and an
optional guidance window) which variant runs at which step. The exporter writes one graph per
variant sharing one weight file, and the step plan in the manifest carries the rules to the
runtime. The exporter tells stepped patches from others by this type, never by probing
attributes.

A stepped patch may also hand tensors from one step to a later one (DeepCache's deep
features): a variant declares the state tensors its graph emits and takes
(:class:`StateTensor`), :meth:`SteppedPatch.carry` says which output feeds which input, and the
exporter binds a traced input with :meth:`~SteppedPatch.bind_state` and reads an emitted one
with :meth:`~SteppedPatch.take_state`. In PyTorch runs the patch keeps the state itself.

A variant computed from state alone (Faster Diffusion's decoder: skip features, the step's
timestep and conditioning) says so with :meth:`~SteppedPatch.takes_sample`; its graph has no
``sample`` input, so it does not depend on the latents of the step it runs at, and the runtime
batches consecutive steps running it into one call (:meth:`~SteppedPatch.batch_steps` says
how many steps one call may cover, which widens the graph's batch range).

A variant that recomputes only some tokens (RAS) names, in :meth:`~SteppedPatch.
token_selection`, the rule the runtime chooses them by from the previous step's change; its
graph takes their indices as an extra input (one row per image, the count an axis of its own)
and the patch reads them with the state in :meth:`~SteppedPatch.bind_state`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from difforge.artifact.step_plan import NoiseDampedGuidance, PriorNoise, Rule
from difforge.artifact.token_selection import TokenSelection
from difforge.patches.base import Patch


@dataclass(frozen=True)
class StateTensor:
    """A feature map kept between steps: ``channels`` deep, at the latent's size / ``divisor``
    (batch and spatial axes shared with the denoiser's sample)."""

    name: str
    channels: int
    divisor: int = 1


class SteppedPatch(Patch):
    """A :class:`Patch` exported as one graph per variant, each variant run on some steps."""

    @abstractmethod
    def variants(self) -> list[str]:
        """Variant names once applied; the first is the default (steps no rule covers)."""

    @abstractmethod
    def set_variant(self, name: str) -> None:
        """Make the applied model compute ``name`` (for export and for PyTorch runs)."""

    @abstractmethod
    def step_rules(self) -> Sequence[Rule]:
        """Which variant runs at which steps, as fractions of the step count."""

    def guidance(self) -> NoiseDampedGuidance | None:
        """A guidance mode over a window of steps (noise-damped CFG), or None for plain CFG."""
        return None

    def prior_noise(self) -> PriorNoise | None:
        """Initial noise mixed into the latents on late steps (Faster Diffusion), or None."""
        return None

    def takes_sample(self, variant: str) -> bool:
        """Whether ``variant``'s graph reads the latents (else it is computed from state)."""
        return True

    def batch_steps(self, variant: str) -> int:
        """How many consecutive steps one call of a sample-free ``variant`` may cover."""
        return 1

    def token_selection(self) -> TokenSelection | None:
        """The tokens a variant recomputes, chosen per step by the runtime (None: all)."""
        return None

    def state_inputs(self, variant: str) -> list[StateTensor]:
        """State tensors ``variant``'s graph takes from an earlier step (none by default)."""
        return []

    def state_outputs(self, variant: str) -> list[StateTensor]:
        """State tensors ``variant``'s graph emits for later steps (none by default)."""
        return []

    def carry(self) -> dict[str, str]:
        """State input name -> the output of an earlier call that feeds it."""
        return {}

    def bind_state(self, inputs: dict[str, torch.Tensor] | None) -> None:
        """Use ``inputs`` as the state for the next forward (export); None: the patch's own."""
        if inputs:
            raise NotImplementedError(f"patch {self.name!r} takes no state")

    def take_state(self) -> dict[str, torch.Tensor]:
        """The state tensors the last forward emitted."""
        return {}
