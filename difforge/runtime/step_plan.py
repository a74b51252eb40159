"""Which graph variant runs at which step, and the per-step inputs: read from the manifest.

Patches that change the model on some steps only (ScaleCrafter's re-dilation for i < τ,
HiDiffusion's RAU-Net for i < T1) are exported as separate graphs sharing one weight file;
the plan says, as fractions of the step count, where each one runs, so the same artifact
serves any ``--steps``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from difforge.errors import DifforgeError
from difforge.runtime.step_inputs import step_table

BASE = "base"


@dataclass
class StepPlan:
    #: variant name -> component key in the manifest ("denoiser", "denoiser@redilated", ...)
    variants: dict[str, str] = field(default_factory=lambda: {BASE: "denoiser"})
    #: [{"variant", "from", "to"}]: steps int(from·N) <= i < int(to·N); first match wins.
    rules: list[dict[str, Any]] = field(default_factory=list)
    #: input name -> {"generator", "seed", "dtype", "shape"}; seed "run" means the seed of
    #: the generation request, so each image gets its own draw, as with the authors' code.
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: e.g. {"mode": "ndcfg", "strong": "redilated", "weak": "weak", "from": 0, "to": 0.7}
    guidance: dict[str, Any] | None = None

    @classmethod
    def from_manifest(cls, data: dict[str, Any] | None) -> StepPlan:
        if not data:
            return cls()
        plan = cls(
            variants=dict(data.get("variants", {BASE: "denoiser"})),
            rules=list(data.get("rules", [])),
            inputs=dict(data.get("inputs", {})),
            guidance=data.get("guidance"),
        )
        for rule in plan.rules:
            if rule.get("variant") not in plan.variants:
                raise DifforgeError(f"step plan names unknown variant {rule.get('variant')!r}")
        return plan

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"variants": self.variants, "rules": self.rules}
        if self.inputs:
            out["inputs"] = self.inputs
        if self.guidance:
            out["guidance"] = self.guidance
        return out

    @property
    def default_variant(self) -> str:
        return next(iter(self.variants))

    @staticmethod
    def _in_range(rule: dict[str, Any], index: int, num_steps: int) -> bool:
        return int(rule.get("from", 0.0) * num_steps) <= index < int(rule["to"] * num_steps)

    def variant_at(self, index: int, num_steps: int) -> str:
        for rule in self.rules:
            if self._in_range(rule, index, num_steps):
                return str(rule["variant"])
        return self.default_variant

    def schedule(self, num_steps: int) -> list[str]:
        return [self.variant_at(i, num_steps) for i in range(num_steps)]

    def guidance_at(self, index: int, num_steps: int) -> dict[str, Any] | None:
        if self.guidance and self._in_range(self.guidance, index, num_steps):
            return self.guidance
        return None

    def tables(self, num_steps: int, run_seed: int = 0) -> dict[str, list[int]]:
        out = {}
        for name, spec in self.inputs.items():
            seed = spec.get("seed", "run")
            out[name] = step_table(
                spec["generator"], num_steps, run_seed if seed == "run" else int(seed)
            )
        return out

    def feeds_at(self, tables: dict[str, list[int]], index: int) -> dict[str, np.ndarray]:
        feeds = {}
        for name, spec in self.inputs.items():
            shape = tuple(spec.get("shape", [1]))
            feeds[name] = np.full(shape, tables[name][index], dtype=np.dtype(spec["dtype"]))
        return feeds
