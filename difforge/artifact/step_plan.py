"""Which graph variant runs at which step, what each step feeds it, what it carries forward.

Patches that change the model on some steps only (ScaleCrafter's re-dilation for i < τ,
HiDiffusion's RAU-Net for i < T1) are exported as separate graphs sharing one weight file; the
plan says, as fractions of the step count, where each one runs, so one artifact serves any
``--steps``. It also lists the per-step input tables (:mod:`difforge.artifact.step_tables`),
a guidance mode over a window of steps, and the tensors a step hands to the next (an output
of one call fed as an input of a later one, which feature-caching methods need).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from difforge.artifact.fields import Fields
from difforge.artifact.interval_rule import IntervalRule
from difforge.artifact.step_tables import step_table
from difforge.artifact.token_selection import TokenSelection
from difforge.errors import DifforgeError

BASE = "base"
#: ``NoiseDampedGuidance.strong`` value meaning "the variant the step rules pick".
STEP_VARIANT = "step_rules"
RUN_SEED = "run"


@dataclass(frozen=True)
class StepRule:
    """Steps ``int(start·N) <= i < int(end·N)`` run ``variant`` (HiDiffusion's ``int(S·ratio)``)."""

    variant: str
    start: float
    end: float

    def covers(self, index: int, num_steps: int) -> bool:
        return int(self.start * num_steps) <= index < int(self.end * num_steps)

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "from": self.start, "to": self.end}

    @classmethod
    def read(cls, f: Fields) -> StepRule:
        rule = cls(
            f.text("variant"),
            f.number("from", 0.0, minimum=0.0, maximum=1.0),
            f.number("to", minimum=0.0, maximum=1.0),
        )
        if not 0.0 <= rule.start <= rule.end:
            raise f.fail("to", f"needs 0 <= from <= to, got [{rule.start}, {rule.end})")
        return rule


#: a step rule as the plan holds it: a window of steps, or every step but the refresh steps
Rule = StepRule | IntervalRule


def read_rule(f: Fields) -> Rule:
    """A rule from its manifest JSON: ``kind`` "interval" (:class:`IntervalRule`), else a
    window (:class:`StepRule`, the format's original rule, which has no ``kind``)."""
    kind = f.text("kind", "window", choices=("window", "interval"))
    return IntervalRule.read(f) if kind == "interval" else StepRule.read(f)


def first_match(rules: tuple[Rule, ...], default: str, index: int, num_steps: int) -> str:
    """The variant of the first rule covering step ``index``, else ``default``."""
    return next((r.variant for r in rules if r.covers(index, num_steps)), default)


@dataclass(frozen=True)
class StepInput:
    """A graph input fed per step from a registered table (``seed`` "run": the request's)."""

    name: str
    table: str
    dtype: str
    shape: tuple[int, ...] = (1,)
    params: dict[str, Any] = field(default_factory=dict)
    seed: int | str = RUN_SEED

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "params": self.params,
            "seed": self.seed,
            "dtype": self.dtype,
            "shape": list(self.shape),
        }

    @classmethod
    def read(cls, name: str, f: Fields) -> StepInput:
        seed = f.raw("seed", RUN_SEED)
        if seed != RUN_SEED:
            f.integer("seed", minimum=0, maximum=(1 << 63) - 1)
        shape = tuple(f.items("shape", [1]))
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape):
            raise f.fail("shape", "expected positive integers")
        return cls(
            name=name,
            table=f.text("table"),
            dtype=f.text("dtype", choices=("int64", "int32", "float32")),
            shape=shape,
            params=f.table("params", {}),
            seed=seed,
        )


@dataclass(frozen=True)
class NoiseDampedGuidance:
    """ScaleCrafter's noise-damped CFG on steps [start·N, end·N): the unconditional half
    comes from a weak variant (``weak_rules`` per step, else ``weak``), the guidance direction
    from the strong one (a named variant, or :data:`STEP_VARIANT`)."""

    strong: str
    weak: str
    start: float
    end: float
    weak_rules: tuple[StepRule, ...] = ()
    mode: str = "ndcfg"

    def covers(self, index: int, num_steps: int) -> bool:
        return StepRule(self.weak, self.start, self.end).covers(index, num_steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "strong": self.strong,
            "weak": self.weak,
            "weak_rules": [r.to_dict() for r in self.weak_rules],
            "from": self.start,
            "to": self.end,
        }

    @classmethod
    def read(cls, f: Fields) -> NoiseDampedGuidance:
        return cls(
            mode=f.text("mode", choices=("ndcfg",)),
            strong=f.text("strong"),
            weak=f.text("weak"),
            weak_rules=tuple(StepRule.read(r) for r in f.objects("weak_rules")),
            start=f.number("from", 0.0, minimum=0.0, maximum=1.0),
            end=f.number("to", minimum=0.0, maximum=1.0),
        )


@dataclass(frozen=True)
class PriorNoise:
    """Faster Diffusion's prior noise injection: before the sampler's step at timestep
    ``t < below``, the latents gain ``scale`` times the initial noise."""

    scale: float
    below: float

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "below": self.below}

    @classmethod
    def read(cls, f: Fields) -> PriorNoise:
        return cls(f.number("scale", minimum=0.0, maximum=1.0), f.number("below", minimum=0.0))


@dataclass
class StepPlan:
    #: variant name -> component key in the manifest ("denoiser", "denoiser@redilated", ...);
    #: the first is the default.
    variants: dict[str, str] = field(default_factory=lambda: {BASE: "denoiser"})
    rules: tuple[Rule, ...] = ()
    inputs: dict[str, StepInput] = field(default_factory=dict)
    guidance: NoiseDampedGuidance | None = None
    #: denoiser input name -> the output of the previous call that feeds it
    carry: dict[str, str] = field(default_factory=dict)
    prior_noise: PriorNoise | None = None
    #: variant -> the most consecutive steps one call of it may serve (its graph takes no
    #: sample, so a run of steps running it is one batched call); absent: one step per call
    batched: dict[str, int] = field(default_factory=dict)
    #: the tokens each step of a variant recomputes, chosen from the previous step (RAS)
    selection: TokenSelection | None = None

    def __post_init__(self) -> None:
        if not self.variants:
            raise DifforgeError("manifest.json: step_plan.variants: no variant")
        named = [r.variant for r in self.rules] + list(self.batched)
        if self.selection is not None:
            named.append(self.selection.variant)
        if self.guidance is not None:
            named += [r.variant for r in self.guidance.weak_rules] + [self.guidance.weak]
            if self.guidance.strong != STEP_VARIANT:
                named.append(self.guidance.strong)
        for name in named:
            if name not in self.variants:
                raise DifforgeError(f"manifest.json: step_plan names unknown variant {name!r}")
        if self.selection is not None and (
            self.guidance is not None or self.selection.variant in self.batched
        ):
            raise DifforgeError(
                "manifest.json: step_plan.selection: a variant that recomputes chosen tokens "
                "cannot also be batched over steps or run beside a guidance mode"
            )
        if self.carry and self.guidance is not None:
            # noise-damped CFG's weak pass runs half the batch, on another variant: a carried
            # tensor of the full batch has no meaning there
            raise DifforgeError(
                "manifest.json: step_plan carries tensors between steps and also sets a "
                "guidance mode; the runtime supports one or the other"
            )

    @classmethod
    def from_dict(cls, data: Any) -> StepPlan:
        """A plan from its manifest JSON (checked field by field)."""
        return cls.read(Fields(data, "step_plan"))

    @classmethod
    def read(cls, f: Fields) -> StepPlan:
        variants = {k: f.obj("variants").text(k) for k in f.table("variants")}
        guidance = f.obj("guidance", None)
        prior = f.obj("prior_noise", None)
        selection = f.obj("selection", None)
        return cls(
            variants=variants,
            rules=tuple(read_rule(r) for r in f.objects("rules")),
            inputs={k: StepInput.read(k, v) for k, v in f.mapping("inputs").items()},
            guidance=NoiseDampedGuidance.read(guidance) if guidance is not None else None,
            carry={k: f.obj("carry").text(k) for k in f.table("carry", {})},
            prior_noise=PriorNoise.read(prior) if prior is not None else None,
            batched={
                k: f.obj("batched").integer(k, minimum=1, maximum=1024)
                for k in f.table("batched", {})
            },
            selection=TokenSelection.read(selection) if selection is not None else None,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "variants": dict(self.variants),
            "rules": [r.to_dict() for r in self.rules],
        }
        if self.inputs:
            out["inputs"] = {k: v.to_dict() for k, v in self.inputs.items()}
        if self.guidance is not None:
            out["guidance"] = self.guidance.to_dict()
        if self.carry:
            out["carry"] = dict(self.carry)
        if self.prior_noise is not None:
            out["prior_noise"] = self.prior_noise.to_dict()
        if self.batched:
            out["batched"] = dict(self.batched)
        if self.selection is not None:
            out["selection"] = self.selection.to_dict()
        return out

    @property
    def default_variant(self) -> str:
        return next(iter(self.variants))

    @property
    def stepped(self) -> bool:
        """Whether anything changes from step to step (else a plain denoiser loop)."""
        return len(self.variants) > 1 or bool(
            self.inputs or self.guidance or self.carry or self.prior_noise or self.selection
        )

    def variant_at(self, index: int, num_steps: int) -> str:
        return first_match(self.rules, self.default_variant, index, num_steps)

    def schedule(self, num_steps: int) -> list[str]:
        return [self.variant_at(i, num_steps) for i in range(num_steps)]

    def guidance_at(self, index: int, num_steps: int) -> NoiseDampedGuidance | None:
        if self.guidance is not None and self.guidance.covers(index, num_steps):
            return self.guidance
        return None

    def tables(self, num_steps: int, run_seed: int = 0) -> dict[str, list[int]]:
        return {
            name: step_table(
                spec.table,
                num_steps,
                run_seed if spec.seed == RUN_SEED else int(spec.seed),
                spec.params,
            )
            for name, spec in self.inputs.items()
        }

    def feeds_at(self, tables: dict[str, list[int]], index: int) -> dict[str, np.ndarray]:
        return {
            name: np.full(spec.shape, tables[name][index], dtype=np.dtype(spec.dtype))
            for name, spec in self.inputs.items()
        }
