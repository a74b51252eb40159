"""DDIM (η = 0), as diffusers' ``DDIMScheduler``."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from difforge.artifact.schedulers.base import Scheduler, alphas_cumprod, spaced_timesteps
from difforge.errors import DifforgeError


class DDIM(Scheduler):
    name = "ddim"
    supported: ClassVar[dict[str, tuple[Any, ...] | None]] = {
        "prediction_type": ("epsilon", "v_prediction", "sample"),
        "thresholding": (False,),
        "rescale_betas_zero_snr": (False,),
        "timestep_spacing": ("leading", "trailing", "linspace"),
    }

    def __init__(self, config: dict[str, Any], num_steps: int) -> None:
        super().__init__(config, num_steps)
        self.check_config(config)
        self.alphas_cumprod = alphas_cumprod(config)
        self.final_alpha_cumprod = (
            np.float32(1.0) if config.get("set_alpha_to_one", True) else self.alphas_cumprod[0]
        )
        self.timesteps = spaced_timesteps(config, num_steps, integer=True)
        last = len(self.alphas_cumprod) - 1
        if self.timesteps.max() > last:
            # 'leading' spacing plus steps_offset overshoots at (nearly) one step per timestep;
            # diffusers' DDIMScheduler fails the same way, with an IndexError.
            most = max(
                s for s in range(1, num_steps) if spaced_timesteps(config, s, True).max() <= last
            )
            raise DifforgeError(
                f"--steps {num_steps} would start DDIM at timestep {int(self.timesteps.max())}, "
                f"past the last training timestep {last} (this model's steps_offset); "
                f"use at most {most} steps"
            )
        self.step_ratio = int(config.get("num_train_timesteps", 1000)) // num_steps

    def step(
        self,
        model_output: np.ndarray,
        index: int,
        sample: np.ndarray,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        t = int(self.timesteps[index])
        prev_t = t - self.step_ratio
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        b_t = 1 - a_t
        kind = self.config.get("prediction_type", "epsilon")
        if kind == "epsilon":
            x0 = (sample - b_t**0.5 * model_output) / a_t**0.5
            eps = model_output
        elif kind == "sample":
            x0 = model_output
            eps = (sample - a_t**0.5 * x0) / b_t**0.5
        else:  # v_prediction
            x0 = a_t**0.5 * sample - b_t**0.5 * model_output
            eps = a_t**0.5 * model_output + b_t**0.5 * sample
        if self.config.get("clip_sample", True):
            limit = float(self.config.get("clip_sample_range", 1.0))
            x0 = np.clip(x0, -limit, limit)
        out = a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps
        return out.astype(np.float32)
