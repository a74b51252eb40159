"""Trajectory-consistency sampling, as diffusers' ``TCDScheduler``.

Each step predicts x̂₀ and ε̂, jumps to the intermediate timestep s = ⌊(1 − γ)·t_prev⌋ on the
same trajectory, and (for γ > 0, except at the last step) noises forward from s to t_prev with
fresh noise. γ is diffusers' ``eta`` argument of ``TCDScheduler.step`` (the paper's gamma): it
is not part of a diffusers config, so difforge reads it from the config key ``gamma``,
defaulting to ``step``'s own default 0.3. γ = 0 is deterministic.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from difforge.artifact.schedulers.base import Scheduler, alphas_cumprod, x0_and_eps
from difforge.artifact.schedulers.lcm import (
    CONSISTENCY_DEFAULTS,
    CONSISTENCY_SUPPORTED,
    consistency_timesteps,
)
from difforge.errors import DifforgeError


class TCD(Scheduler):
    name = "tcd"
    stochastic = True
    supported: ClassVar[dict[str, tuple[Any, ...] | None]] = dict(CONSISTENCY_SUPPORTED)
    defaults: ClassVar[dict[str, Any]] = {**CONSISTENCY_DEFAULTS, "gamma": 0.3}

    def __init__(self, config: dict[str, Any], num_steps: int) -> None:
        super().__init__(config, num_steps)
        self.check_config(self.config)
        self.alphas_cumprod = alphas_cumprod(self.config)
        self.timesteps = consistency_timesteps(self.config, num_steps, self.name)
        self.gamma = float(self.config["gamma"])

    def intermediate(self, index: int) -> tuple[int, int]:
        """(t_prev, s) after step ``index``: the next timestep (0 after the last) and the one
        the step lands on before re-noising. ``(1 − γ)·t_prev`` is floored in float32, as
        diffusers' tensor arithmetic does."""
        last = index == len(self.timesteps) - 1
        t_prev = 0 if last else int(self.timesteps[index + 1])
        s = int(np.floor(np.float32(1.0 - self.gamma) * np.float32(t_prev)))
        return t_prev, s

    def step(
        self,
        model_output: np.ndarray,
        index: int,
        sample: np.ndarray,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        t = int(self.timesteps[index])
        t_prev, s = self.intermediate(index)
        kind = self.config["prediction_type"]
        x0, eps = x0_and_eps(kind, model_output, sample, self.alphas_cumprod[t])
        a_s = self.alphas_cumprod[s]
        noised = np.sqrt(a_s) * x0 + np.sqrt(np.float32(1) - a_s) * eps
        if self.gamma == 0 or index == len(self.timesteps) - 1:
            return noised.astype(np.float32)
        if rng is None:
            raise DifforgeError("tcd needs a seeded noise generator")
        ratio = self.alphas_cumprod[t_prev] / a_s
        noise = rng.standard_normal(sample.shape, dtype=np.float32)
        out = np.sqrt(ratio) * noised + np.sqrt(np.float32(1) - ratio) * noise
        return out.astype(np.float32)
