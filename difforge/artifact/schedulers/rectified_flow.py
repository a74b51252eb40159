"""Euler on a rectified flow, as InstaFlow samples (gnobitab/InstaFlow ``code/pipeline_rf.py``;
there is no diffusers scheduler class for it).

N uniform steps from noise (t = 1000) towards data: the model is fed t_i = (1 − i/N)·1000
and its output v is a velocity pointing at the data, so x ← x + v/N; one step gives
x₁ = z + v(z, 1000). ``flow-euler`` cannot host this as a config: diffusers' flow matching
runs σ from 1 down a shifted grid that ends at 1/T, not 0, and its velocity points the other
way (x ← x + (σ_next − σ)·v, with v = noise − data). Nothing in the model's scheduler config
is read: InstaFlow's time scale is the constant 1000 of its pipeline.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from difforge.artifact.schedulers.base import Scheduler

#: InstaFlow's time scale: the model's timestep input runs from 1000 (noise) towards 0.
TIME_SCALE = 1000.0


class RectifiedFlow(Scheduler):
    name = "rectified-flow"

    def __init__(self, config: dict[str, Any], num_steps: int) -> None:
        super().__init__(config, num_steps)
        self.timesteps = np.asarray(
            [(1.0 - i / num_steps) * TIME_SCALE for i in range(num_steps)], dtype=np.float32
        )
        self.dt = np.float32(1.0 / num_steps)

    def step(
        self,
        model_output: np.ndarray,
        index: int,
        sample: np.ndarray,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        return (sample + self.dt * model_output).astype(np.float32)
