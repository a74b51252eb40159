"""Flow-matching Euler (rectified flow), as diffusers' ``FlowMatchEulerDiscreteScheduler``.

FluxPipeline always hands the scheduler its own sigmas, ``linspace(1, 1/N, N)``: shifted by
``mu`` (which grows linearly with the image's token count) with ``use_dynamic_shifting``
(FLUX.1-dev), by the constant ``shift`` otherwise (FLUX.1-schnell). A config without dynamic
shifting gets FluxPipeline's sigmas only when it carries difforge's key ``flux_sigmas`` (set
when a FluxPipeline folder is loaded); otherwise the scheduler's own grid, as SD3's pipeline
samples, from σ_max down to 1/T.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from difforge.artifact.schedulers.base import Scheduler
from difforge.errors import DifforgeError


def flux_mu(image_seq_len: int, config: dict[str, Any]) -> float:
    """diffusers' ``calculate_shift``: mu interpolated between the base and max sequence."""
    base_len = float(config.get("base_image_seq_len", 256))
    max_len = float(config.get("max_image_seq_len", 4096))
    base_shift = float(config.get("base_shift", 0.5))
    max_shift = float(config.get("max_shift", 1.15))
    slope = (max_shift - base_shift) / (max_len - base_len)
    return image_seq_len * slope + (base_shift - slope * base_len)


class FlowMatchEuler(Scheduler):
    name = "flow-euler"
    supported: ClassVar[dict[str, tuple[Any, ...] | None]] = {
        "invert_sigmas": (False,),
        "shift_terminal": (None,),
        "use_karras_sigmas": (False,),
        "use_exponential_sigmas": (False,),
        "use_beta_sigmas": (False,),
        "stochastic_sampling": (False,),
        "time_shift_type": ("exponential",),
    }

    def __init__(
        self, config: dict[str, Any], num_steps: int, image_seq_len: int | None = None
    ) -> None:
        super().__init__(config, num_steps)
        self.check_config(config)
        n = int(config.get("num_train_timesteps", 1000))
        shift = float(config.get("shift", 1.0))
        if config.get("use_dynamic_shifting"):
            if image_seq_len is None:
                raise DifforgeError("flow-euler with dynamic shifting needs the image size")
            mu = flux_mu(image_seq_len, config)
            base = np.linspace(1.0, 1.0 / num_steps, num_steps)
            sigmas = math.exp(mu) / (math.exp(mu) + (1.0 / base - 1.0))
        elif config.get("flux_sigmas"):
            base = np.linspace(1.0, 1.0 / num_steps, num_steps)
            sigmas = shift * base / (1 + (shift - 1) * base)
        else:
            train = np.linspace(1, n, n, dtype=np.float32)[::-1] / n
            train = shift * train / (1 + (shift - 1) * train)
            sigma_max, sigma_min = float(train[0]), float(train[-1])
            sigmas = np.linspace(sigma_max * n, sigma_min * n, num_steps) / n
            sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
        self.sigmas = np.concatenate([np.asarray(sigmas, np.float32), [0.0]]).astype(np.float32)
        self.timesteps = (self.sigmas[:-1] * n).astype(np.float32)

    def step(
        self,
        model_output: np.ndarray,
        index: int,
        sample: np.ndarray,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        dt = self.sigmas[index + 1] - self.sigmas[index]
        return (sample + dt * model_output).astype(np.float32)
