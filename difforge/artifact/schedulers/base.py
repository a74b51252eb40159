"""The sampler interface the runtime loop drives, and the DDPM-family beta schedules.

Each scheduler is set for a step count up front and then indexed by step, never by timestep
value: a step plan (which graph variant, which shift) is keyed by the same index.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from difforge.errors import DifforgeError

#: The numbers a sampler reads from a diffusers config, with their ranges: a config comes from
#: a model folder or an artifact's manifest, and a value of the wrong type or out of range must
#: be refused by name, not fail deep in numpy or give NaN timesteps.
NUMBERS: dict[str, tuple[type, float, float]] = {
    "num_train_timesteps": (int, 1, 100_000),
    "steps_offset": (int, 0, 1000),
    "beta_start": (float, 1e-8, 0.999),
    "beta_end": (float, 1e-8, 0.999),
    "clip_sample_range": (float, 1e-6, 1e6),
    "shift": (float, 1e-6, 1e6),
    "base_shift": (float, -100, 100),
    "max_shift": (float, -100, 100),
    "base_image_seq_len": (int, 1, 1 << 24),
    "max_image_seq_len": (int, 1, 1 << 24),
    # consistency samplers (lcm, tcd)
    "original_inference_steps": (int, 1, 100_000),
    "timestep_scaling": (float, 1e-6, 1e6),
    "gamma": (float, 0.0, 1.0),
    # multistep solvers (dpm++2m, unipc)
    "solver_order": (int, 1, 3),
    "lambda_min_clipped": (float, -math.inf, 1e6),
    "sigma_min": (float, 1e-10, 1e6),
    "sigma_max": (float, 1e-10, 1e6),
}
FLAGS = (
    "clip_sample",
    "set_alpha_to_one",
    "use_dynamic_shifting",
    "lower_order_final",
    "euler_at_final",
    "predict_x0",
    "use_karras_sigmas",
)


def check_numbers(config: dict[str, Any], required: tuple[str, ...] = ()) -> None:
    """Refuse a sampler config whose numbers are of the wrong type or outside their range;
    the ``required`` ones may not be null either."""
    for key, (kind, lo, hi) in NUMBERS.items():
        value = config.get(key)
        if value is None and key not in required:
            continue
        ok = not isinstance(value, bool) and isinstance(value, int if kind is int else (int, float))
        if value is None or not ok or not lo <= value <= hi:  # NaN compares False: refused too
            raise DifforgeError(
                f"scheduler config {key}={value!r} is not a {kind.__name__} in [{lo:g}, {hi:g}]"
            )
    for key in FLAGS:
        if key in config and config[key] is not None and not isinstance(config[key], bool):
            raise DifforgeError(f"scheduler config {key}={config[key]!r} is not true or false")
    betas = config.get("trained_betas")
    if betas is not None and (
        not isinstance(betas, list)
        or not betas
        or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in betas)
        or not all(0 < b < 1 for b in betas)
    ):
        raise DifforgeError("scheduler config trained_betas is not a list of numbers in (0, 1)")
    if betas is not None and len(betas) != int(config.get("num_train_timesteps", 1000)):
        raise DifforgeError("scheduler config trained_betas does not hold num_train_timesteps")
    if config.get("base_image_seq_len", 256) == config.get("max_image_seq_len", 4096):
        raise DifforgeError("scheduler config base_image_seq_len equals max_image_seq_len")


class Scheduler(ABC):
    """A numpy sampler: timesteps for N steps, input scaling and the update rule."""

    name: ClassVar[str]
    #: True when ``step`` draws fresh noise (ancestral samplers).
    stochastic: ClassVar[bool] = False
    #: Config keys this implementation honours; anything else set to a non-default is refused.
    supported: ClassVar[dict[str, tuple[Any, ...] | None]] = {}
    #: The diffusers class's defaults where they differ from the DDPM ones the helpers below
    #: assume: a config without the key is read with its class's default, as diffusers does.
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: dict[str, Any], num_steps: int) -> None:
        if num_steps < 1:
            raise DifforgeError(f"--steps must be at least 1, got {num_steps}")
        config = {**self.defaults, **config}
        check_numbers(config, tuple(k for k, v in self.defaults.items() if v is not None))
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
        roots = np.linspace(start**0.5, end**0.5, n, dtype=np.float64).astype(np.float32)
        betas = roots**2  # squared in float32, as torch does
    elif schedule == "squaredcos_cap_v2":
        t = np.arange(n, dtype=np.float64)
        fn = np.cos((t / n + 0.008) / 1.008 * np.pi / 2) ** 2
        fn1 = np.cos(((t + 1) / n + 0.008) / 1.008 * np.pi / 2) ** 2
        betas = np.minimum(1 - fn1 / fn, 0.999).astype(np.float32)
    else:
        raise DifforgeError(f"unsupported beta_schedule {schedule!r}")
    # torch's float32 cumprod accumulates in float64: so does this, to match diffusers' ᾱ
    alphas = (np.float32(1.0) - betas).astype(np.float32)
    return np.cumprod(alphas, dtype=np.float64).astype(np.float32)


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


def x0_and_eps(
    kind: str, model_output: np.ndarray, sample: np.ndarray, a_t: np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """The clean sample and the noise a DDPM-parameterised model output stands for, at ᾱ_t."""
    sqrt_a, sqrt_b = np.sqrt(a_t), np.sqrt(np.float32(1) - a_t)
    if kind == "epsilon":
        return (sample - sqrt_b * model_output) / sqrt_a, model_output
    if kind == "sample":
        return model_output, (sample - sqrt_a * model_output) / sqrt_b
    # v_prediction
    return sqrt_a * sample - sqrt_b * model_output, sqrt_a * model_output + sqrt_b * sample
