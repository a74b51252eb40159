"""Euler and Euler-ancestral on the VP sigma schedule, as diffusers' Euler schedulers."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from difforge.artifact.schedulers.base import Scheduler, alphas_cumprod, spaced_timesteps
from difforge.errors import DifforgeError


class Euler(Scheduler):
    name = "euler"
    supported: ClassVar[dict[str, tuple[Any, ...] | None]] = {
        "prediction_type": ("epsilon", "v_prediction"),
        "interpolation_type": ("linear",),
        "use_karras_sigmas": (False, None),
        "use_exponential_sigmas": (False, None),
        "use_beta_sigmas": (False, None),
        "timestep_type": ("discrete",),
        "rescale_betas_zero_snr": (False,),
        "final_sigmas_type": ("zero",),
    }
    #: diffusers' Euler schedulers space their steps by 'linspace' unless told otherwise.
    defaults: ClassVar[dict[str, Any]] = {"timestep_spacing": "linspace"}

    def __init__(self, config: dict[str, Any], num_steps: int) -> None:
        super().__init__(config, num_steps)
        self.check_config(self.config)
        acp = alphas_cumprod(self.config)
        train_sigmas = ((1 - acp) / acp) ** 0.5
        self.timesteps = spaced_timesteps(self.config, num_steps, integer=False)
        sigmas = np.interp(self.timesteps, np.arange(len(train_sigmas)), train_sigmas)
        self.sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)

    @property
    def init_noise_sigma(self) -> float:
        top = float(self.sigmas.max())
        if self.config["timestep_spacing"] in ("linspace", "trailing"):
            return top
        return float((top**2 + 1) ** 0.5)

    def scale_model_input(self, sample: np.ndarray, index: int) -> np.ndarray:
        sigma = self.sigmas[index]
        return (sample / ((sigma**2 + 1) ** 0.5)).astype(np.float32)

    def _x0(self, model_output: np.ndarray, sigma: np.float32, sample: np.ndarray) -> np.ndarray:
        if self.config.get("prediction_type", "epsilon") == "epsilon":
            return sample - sigma * model_output
        return model_output * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)

    def step(
        self,
        model_output: np.ndarray,
        index: int,
        sample: np.ndarray,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        sigma = self.sigmas[index]
        x0 = self._x0(model_output, sigma, sample)
        derivative = (sample - x0) / sigma
        return (sample + derivative * (self.sigmas[index + 1] - sigma)).astype(np.float32)


class EulerAncestral(Euler):
    name = "euler-ancestral"
    stochastic = True

    def step(
        self,
        model_output: np.ndarray,
        index: int,
        sample: np.ndarray,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        if rng is None:
            raise DifforgeError("euler-ancestral needs a seeded noise generator")
        s_from, s_to = self.sigmas[index], self.sigmas[index + 1]
        x0 = self._x0(model_output, s_from, sample)
        s_up = (s_to**2 * (s_from**2 - s_to**2) / s_from**2) ** 0.5
        s_down = (s_to**2 - s_up**2) ** 0.5
        out = sample + (sample - x0) / s_from * (s_down - s_from)
        noise = rng.standard_normal(sample.shape, dtype=np.float32)
        return (out + noise * s_up).astype(np.float32)
