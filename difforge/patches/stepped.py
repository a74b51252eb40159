"""The stepped-patch contract: a patch whose rewrite depends on the denoising step.

ScaleCrafter re-dilates convolutions for steps i < τ, HiDiffusion's RAU-Net changes its
down/upsampling below T1/T2: the authors branch on the step inside the forward, which a graph
cannot. Such a patch declares named variants of the model (the first is the one the other
steps run), switches the live model between them for export, and says in step rules (and an
optional guidance window) which variant runs at which step. The exporter writes one graph per
variant sharing one weight file, and the step plan in the manifest carries the rules to the
runtime. The exporter tells stepped patches from others by this type, never by probing
attributes.
"""

from __future__ import annotations

from abc import abstractmethod

from difforge.artifact.step_plan import NoiseDampedGuidance, StepRule
from difforge.patches.base import Patch


class SteppedPatch(Patch):
    """A :class:`Patch` exported as one graph per variant, each variant run on some steps."""

    @abstractmethod
    def variants(self) -> list[str]:
        """Variant names once applied; the first is the default (steps no rule covers)."""

    @abstractmethod
    def set_variant(self, name: str) -> None:
        """Make the applied model compute ``name`` (for export and for PyTorch runs)."""

    @abstractmethod
    def step_rules(self) -> list[StepRule]:
        """Which variant runs at which steps, as fractions of the step count."""

    def guidance(self) -> NoiseDampedGuidance | None:
        """A guidance mode over a window of steps (noise-damped CFG), or None for plain CFG."""
        return None
