"""The step policy: what each denoising step runs, from the artifact's step plan.

For step i of N it says which graph runs (the plan's variant rules), which per-step inputs it
gets (the plan's seeded tables), which guidance mode applies, and which tensors the step takes
from the one before (an output of one call fed as an input of a later one: the hook
feature-caching methods need), and which later steps the same call serves: a variant the plan
lists as ``batched`` (its graph takes no ``sample``, so it does not depend on the step's
latents) serves a run of consecutive steps, up to the plan's limit, in one call at the first.
The sampling loop asks the policy and never reads the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from difforge.artifact.manifest import ComponentEntry
from difforge.artifact.step_plan import NoiseDampedGuidance, StepPlan, first_match
from difforge.errors import DifforgeError


@dataclass
class StepCall:
    """What step ``index`` runs: ``variant`` (graph ``component``) with ``feeds`` beside the
    sample, timestep and conditioning, and a guidance mode (None: plain CFG)."""

    index: int
    variant: str
    component: str
    feeds: dict[str, np.ndarray] = field(default_factory=dict)
    guidance: NoiseDampedGuidance | None = None
    #: the steps whose predictions this call makes: this one, then any later ones batched in
    steps: tuple[int, ...] = ()
    #: feeds with one row per image (the loop repeats them for each guidance half)
    per_image: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.steps:
            self.steps = (self.index,)


class StepPolicy:
    def __init__(self, plan: StepPlan, components: dict[str, ComponentEntry]) -> None:
        self.plan = plan
        for variant, key in plan.variants.items():
            if key not in components:
                raise DifforgeError(
                    f"manifest.json: step_plan: variant {variant!r} names component {key!r}, "
                    "which the artifact does not have"
                )
        self._inputs = {
            key: {t.name for t in components[key].inputs} for key in plan.variants.values()
        }
        emits = set(plan.carry.values())
        for variant in plan.batched:
            entry = components[plan.variants[variant]]
            if "sample" in self._inputs[plan.variants[variant]] or emits & {
                t.name for t in entry.outputs
            } or plan.inputs or plan.guidance is not None:
                raise DifforgeError(
                    f"manifest.json: step_plan.batched: variant {variant!r} cannot serve several "
                    "steps in one call (its graph reads the sample or emits carried state, or "
                    "the plan has per-step inputs or a guidance mode)"
                )
        selection = plan.selection
        if selection is not None and selection.input not in self._inputs[
            plan.variants[selection.variant]
        ]:
            raise DifforgeError(
                f"manifest.json: step_plan.selection: variant {selection.variant!r}'s graph "
                f"has no input {selection.input!r}"
            )
        self._num_steps = 0
        self._tables: dict[str, list[int]] = {}
        self._carried: dict[str, np.ndarray] = {}
        self._drops: np.ndarray | None = None
        self._active: np.ndarray | None = None

    def start(self, num_steps: int, seed: int) -> None:
        """Set up for a run of ``num_steps`` steps: the per-step tables for ``seed``, and no
        carried tensors yet."""
        self._num_steps = num_steps
        self._tables = self.plan.tables(num_steps, seed)
        self._carried = {}
        self._drops, self._active = None, None
        self.plan.schedule(num_steps)  # a schedule that cannot be made fails before any step

    def component(self, variant: str) -> str:
        return self.plan.variants[variant]

    def at(self, index: int) -> StepCall:
        variant = self.plan.variant_at(index, self._num_steps)
        key = self.component(variant)
        feeds = self.plan.feeds_at(self._tables, index)
        for input_name, output in self.plan.carry.items():
            if input_name not in self._inputs[key]:
                continue
            if input_name not in self._carried:
                raise DifforgeError(
                    f"step {index} runs {key}, which takes {input_name!r} from an earlier "
                    f"step's {output!r}, but no earlier step produced it"
                )
            feeds[input_name] = self._carried[input_name]
        per_image: frozenset[str] = frozenset()
        selection = self.plan.selection
        if selection is not None and variant == selection.variant:
            if self._active is None:
                raise DifforgeError(
                    f"step {index} runs {key}, which recomputes the tokens chosen from the "
                    "step before, but no step before chose them"
                )
            feeds[selection.input] = self._active
            per_image = frozenset({selection.input})
        guidance = self.plan.guidance_at(index, self._num_steps)
        steps = [index]
        most = self.plan.batched.get(variant, 1)
        while (
            len(steps) < most
            and steps[-1] + 1 < self._num_steps
            and self.plan.variant_at(steps[-1] + 1, self._num_steps) == variant
        ):
            steps.append(steps[-1] + 1)
        return StepCall(index, variant, key, feeds, guidance, tuple(steps), per_image)

    def observe(self, index: int, before: np.ndarray, after: np.ndarray) -> None:
        """The sampler's step ``index`` took the latents from ``before`` to ``after``: when
        the next step recomputes chosen tokens, choose them from the change."""
        selection = self.plan.selection
        following = index + 1
        if selection is None or following >= self._num_steps:
            return
        self._active = None
        if self.plan.variant_at(following, self._num_steps) != selection.variant:
            return
        delta = after.astype(np.float32) - before.astype(np.float32)
        if self._drops is None:
            tokens = selection.tokens(delta.shape)
            self._drops = selection.first_drops(len(delta), tokens, self._num_steps)
        self._active = selection.select(delta, self._drops)

    def prior_noise(self, t: np.floating | float) -> float:
        """How much of the initial noise the latents gain before the sampler's step at ``t``."""
        prior = self.plan.prior_noise
        return prior.scale if prior is not None and float(t) < prior.below else 0.0

    def weak_variant(self, mode: NoiseDampedGuidance, index: int) -> str:
        """The variant whose unconditional pass noise-damped CFG uses at step ``index``."""
        if not mode.weak_rules:
            return mode.weak
        return first_match(mode.weak_rules, self.plan.default_variant, index, self._num_steps)

    def keep(self, outputs: dict[str, np.ndarray]) -> None:
        """Hold the outputs later steps take (the plan's ``carry``) from one step's call."""
        for input_name, output in self.plan.carry.items():
            if output in outputs:
                self._carried[input_name] = outputs[output]
