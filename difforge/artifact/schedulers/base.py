"""The sampler interface the runtime loop drives, and the DDPM-family beta schedules.

Each scheduler is set for a step count up front and then indexed by step, never by timestep
value: a step plan (which graph variant, which shift) is keyed by the same index.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from difforge.errors import DifforgeError


class Scheduler(ABC):
    """A numpy sampler: timesteps for N steps, input scaling and the update rule."""

    name: ClassVar[str]
    #: True when ``step`` draws fresh noise (ancestral samplers).
    stochastic: ClassVar[bool] = False
    #: Config keys this implementation honours; anything else set to a non-default is refused.
    supported: ClassVar[dict[str, tuple[Any, ...] | None]] = {}

    def __init__(self, config: dict[str, Any], num_steps: int) -> None:
        if num_steps < 1:
            raise DifforgeError(f"--steps must be at least 1, got {num_steps}")
        trained = int(config.get("num_train_timesteps", 1000))
        if num_steps > trained:
            raise DifforgeError(f"--steps {num_steps} exceeds the {trained} training timesteps")
        self.config = config
        self.num_steps = num_steps
        self.timesteps: np.ndarray = np.zeros(0, np.float32)

    @property
    def init_noise_sigma(self) -> float:
        return 1.0

    def scale_model_input(self, sample: np.ndarray, index: int) -> np.ndarray:
        return sample

    @abstractmethod
    def step(
        self,
        model_output: np.ndarray,
        index: int,
        sample: np.ndarray,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """Return the sample for step ``index + 1``."""

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> None:
        """Refuse config values this sampler does not implement, naming the first one."""
        for key, allowed in cls.supported.items():
            if allowed is None or key not in config:
                continue
            if config[key] not in allowed:
                raise DifforgeError(
                    f"scheduler '{cls.name}' does not support {key}={config[key]!r} "
                    f"(supported: {', '.join(map(repr, allowed))})"
                )


def alphas_cumprod(config: dict[str, Any]) -> np.ndarray:
    """ᾱ_t in float32, computed the way diffusers does for the linear-family schedules."""
    n = int(config.get("num_train_timesteps", 1000))
    start = float(config.get("beta_start", 0.0001))
    end = float(config.get("beta_end", 0.02))
    schedule = config.get("beta_schedule", "linear")
    if config.get("trained_betas") is not None:
        betas = np.asarray(config["trained_betas"], dtype=np.float32)
    elif schedule == "linear":
        betas = np.linspace(start, end, n, dtype=np.float64).astype(np.float32)
    elif schedule == "scaled_linear":
        betas = (np.linspace(start**0.5, end**0.5, n, dtype=np.float64) ** 2).astype(np.float32)
    elif schedule == "squaredcos_cap_v2":
        t = np.arange(n, dtype=np.float64)
        fn = np.cos((t / n + 0.008) / 1.008 * np.pi / 2) ** 2
        fn1 = np.cos(((t + 1) / n + 0.008) / 1.008 * np.pi / 2) ** 2
        betas = np.minimum(1 - fn1 / fn, 0.999).astype(np.float32)
    else:
        raise DifforgeError(f"unsupported beta_schedule {schedule!r}")
    return np.cumprod(1.0 - betas, dtype=np.float32)


def spaced_timesteps(config: dict[str, Any], num_steps: int, integer: bool) -> np.ndarray:
    """diffusers' ``timestep_spacing`` rules (leading / trailing / linspace)."""
    n = int(config.get("num_train_timesteps", 1000))
    spacing = config.get("timestep_spacing", "leading")
    if spacing == "linspace":
        ts = np.linspace(0, n - 1, num_steps)[::-1]
        ts = ts.round() if integer else ts.astype(np.float32)
    elif spacing == "leading":
        ratio = n // num_steps
        ts = (np.arange(0, num_steps) * ratio).round()[::-1] + int(config.get("steps_offset", 0))
    elif spacing == "trailing":
        ts = np.round(np.arange(n, 0, -n / num_steps)) - 1
    else:
        raise DifforgeError(f"unsupported timestep_spacing {spacing!r}")
    return np.ascontiguousarray(ts, dtype=np.float32)
