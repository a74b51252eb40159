"""Flow-matching Euler (rectified flow), as diffusers' ``FlowMatchEulerDiscreteScheduler``."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from difforge.runtime.schedulers.base import Scheduler


class FlowMatchEuler(Scheduler):
    name = "flow-euler"
    supported: ClassVar[dict[str, tuple[Any, ...] | None]] = {
        "use_dynamic_shifting": (False,),
        "invert_sigmas": (False,),
        "shift_terminal": (None,),
        "use_karras_sigmas": (False,),
        "use_exponential_sigmas": (False,),
        "use_beta_sigmas": (False,),
        "stochastic_sampling": (False,),
    }

    def __init__(self, config: dict[str, Any], num_steps: int) -> None:
        super().__init__(config, num_steps)
        self.check_config(config)
        n = int(config.get("num_train_timesteps", 1000))
        shift = float(config.get("shift", 1.0))
        train = np.linspace(1, n, n, dtype=np.float32)[::-1] / n
        train = shift * train / (1 + (shift - 1) * train)
        sigma_max, sigma_min = float(train[0]), float(train[-1])
        ts = np.linspace(sigma_max * n, sigma_min * n, num_steps)
        sigmas = ts / n
        sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
        self.sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
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
