"""Latent-consistency sampling, as diffusers' ``LCMScheduler``.

Each step maps the sample to the consistency function's clean estimate (the model's x̂₀ under
the boundary condition c_skip·x + c_out·x̂₀) and, except at the last step, noises it again to
the next timestep with fresh noise from the runtime's generator. The timesteps are a subset
of the distillation schedule: ``original_inference_steps`` steps of k = T // steps, ending at
k − 1.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from difforge.artifact.schedulers.base import Scheduler, alphas_cumprod, x0_and_eps
from difforge.errors import DifforgeError

#: LCMScheduler's and TCDScheduler's defaults (latent-diffusion betas, 50 origin steps).
CONSISTENCY_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "original_inference_steps": 50,
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "prediction_type": "epsilon",
    "timestep_scaling": 10.0,
}

#: The config values both consistency samplers implement.
CONSISTENCY_SUPPORTED: dict[str, tuple[Any, ...] | None] = {
    "prediction_type": ("epsilon", "v_prediction", "sample"),
    "thresholding": (False,),
    "rescale_betas_zero_snr": (False,),
}


def consistency_timesteps(config: dict[str, Any], num_steps: int, sampler: str) -> np.ndarray:
    """The distillation schedule's evenly spaced subset, as LCM/TCD's ``set_timesteps``."""
    trained = int(config["num_train_timesteps"])
    origin = int(config["original_inference_steps"])
    if origin > trained:
        raise DifforgeError(
            f"scheduler config original_inference_steps={origin} exceeds the {trained} "
            "training timesteps"
        )
    if num_steps > origin:
        raise DifforgeError(
            f"--steps {num_steps} exceeds the {origin} steps {sampler} was distilled on "
            f"(original_inference_steps); use at most {origin}"
        )
    k = trained // origin
    origin_ts = (np.arange(1, origin + 1) * k - 1)[::-1]
    picks = np.floor(np.linspace(0, origin, num_steps, endpoint=False)).astype(np.int64)
    return np.ascontiguousarray(origin_ts[picks], dtype=np.float32)


class LCM(Scheduler):
    name = "lcm"
    stochastic = True
    supported: ClassVar[dict[str, tuple[Any, ...] | None]] = dict(CONSISTENCY_SUPPORTED)
    defaults: ClassVar[dict[str, Any]] = CONSISTENCY_DEFAULTS

    def __init__(self, config: dict[str, Any], num_steps: int) -> None:
        super().__init__(config, num_steps)
        self.check_config(self.config)
        self.alphas_cumprod = alphas_cumprod(self.config)
        self.timesteps = consistency_timesteps(self.config, num_steps, self.name)

    def boundary(self, t: int) -> tuple[np.float32, np.float32]:
        """(c_skip, c_out) at timestep ``t``, with σ_data = 0.5."""
        scaled = t * float(self.config["timestep_scaling"])
        c_skip = 0.25 / (scaled**2 + 0.25)
        c_out = scaled / (scaled**2 + 0.25) ** 0.5
        return np.float32(c_skip), np.float32(c_out)

    def step(
        self,
        model_output: np.ndarray,
        index: int,
        sample: np.ndarray,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        t = int(self.timesteps[index])
        x0, _ = x0_and_eps(
            self.config["prediction_type"], model_output, sample, self.alphas_cumprod[t]
        )
        if self.config["clip_sample"]:
            limit = float(self.config["clip_sample_range"])
            x0 = np.clip(x0, -limit, limit)
        c_skip, c_out = self.boundary(t)
        denoised = c_out * x0 + c_skip * sample
        if index == len(self.timesteps) - 1:  # no noise after the last step (nor for 1 step)
            return denoised.astype(np.float32)
        if rng is None:
            raise DifforgeError("lcm needs a seeded noise generator")
        a_prev = self.alphas_cumprod[int(self.timesteps[index + 1])]
        noise = rng.standard_normal(sample.shape, dtype=np.float32)
        out = np.sqrt(a_prev) * denoised + np.sqrt(np.float32(1) - a_prev) * noise
        return out.astype(np.float32)
