"""Noise schedules shared by the multistep solvers (dpm++2m, unipc), as diffusers'
``DPMSolverMultistepScheduler`` and ``UniPCMultistepScheduler`` build them.

Both space N + 1 points and drop the last (unlike DDIM/Euler), may bend the sigmas into a
Karras schedule, and work in log-SNR λ = log α − log σ of the VP process x = α·x₀ + σ·ε.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from difforge.errors import DifforgeError

#: What the two diffusers classes default to (the DDPM betas, 'linspace' spacing).
MULTISTEP_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "solver_order": 2,
    "prediction_type": "epsilon",
    "lower_order_final": True,
    "use_karras_sigmas": False,
    "timestep_spacing": "linspace",
    "steps_offset": 0,
    "final_sigmas_type": "zero",
}

#: Config values both solvers refuse: the other sigma schedules, flow matching, thresholding.
MULTISTEP_SUPPORTED: dict[str, tuple[Any, ...] | None] = {
    "prediction_type": ("epsilon", "v_prediction", "sample"),
    "thresholding": (False,),
    "use_exponential_sigmas": (False,),
    "use_beta_sigmas": (False,),
    "use_flow_sigmas": (False,),
    "use_dynamic_shifting": (False,),
    "rescale_betas_zero_snr": (False,),
    "timestep_spacing": ("linspace", "leading", "trailing"),
    "final_sigmas_type": ("zero", "sigma_min"),
}


def multistep_timesteps(config: dict[str, Any], num_steps: int, last: int) -> np.ndarray:
    """Integer timesteps by ``timestep_spacing``; ``last`` is one past the highest usable
    timestep (``num_train_timesteps`` unless λ is clipped)."""
    n = int(config["num_train_timesteps"])
    spacing = config["timestep_spacing"]
    if spacing == "linspace":
        ts = np.linspace(0, last - 1, num_steps + 1).round()[::-1][:-1]
    elif spacing == "leading":
        ratio = last // (num_steps + 1)
        ts = (np.arange(0, num_steps + 1) * ratio).round()[::-1][:-1]
        ts = ts + int(config["steps_offset"])
    else:  # trailing
        ts = np.arange(last, 0, -n / num_steps).round() - 1
    return ts.astype(np.int64)


def train_sigmas(acp: np.ndarray) -> np.ndarray:
    """σ_t = √((1 − ᾱ_t)/ᾱ_t) for every training timestep, in float32."""
    return (((np.float32(1) - acp) / acp) ** np.float32(0.5)).astype(np.float32)


def karras(
    descending: np.ndarray, num_steps: int, lo: float | None = None, hi: float | None = None
) -> np.ndarray:
    """Karras et al.'s ρ = 7 schedule between the ends of ``descending`` (or ``lo``/``hi``)."""
    lo = float(descending[-1]) if lo is None else lo
    hi = float(descending[0]) if hi is None else hi
    ramp = np.linspace(0, 1, num_steps)
    top, bottom = hi ** (1 / 7), lo ** (1 / 7)
    return np.asarray((top + ramp * (bottom - top)) ** 7, dtype=np.float64)


def sigma_to_t(sigmas: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """Fractional timesteps of ``sigmas`` by linear interpolation in log σ."""
    log_s = np.log(np.maximum(sigmas, 1e-10))
    below = (log_s[None, :] - log_sigmas[:, None]) >= 0
    low = np.minimum(np.cumsum(below, axis=0).argmax(axis=0), len(log_sigmas) - 2)
    lo_v, hi_v = log_sigmas[low], log_sigmas[low + 1]
    w = np.clip((lo_v - log_s) / (lo_v - hi_v), 0, 1)
    return np.asarray((1 - w) * low + w * (low + 1), dtype=np.float64)


def alpha_sigma_lambda(sigma: np.float32) -> tuple[np.float32, np.float32, np.float32]:
    """(α, σ, λ) of the VP process at Euler-sigma ``sigma``, in float32 (λ = +∞ at σ = 0)."""
    alpha = np.float32(1) / (sigma * sigma + np.float32(1)) ** np.float32(0.5)
    sigma_t = sigma * alpha
    with np.errstate(divide="ignore"):
        lam = np.log(alpha) - np.log(sigma_t)
    return alpha, sigma_t, lam


def final_sigma(config: dict[str, Any], acp: np.ndarray) -> np.float32:
    """The sigma the last step lands on: 0 or the smallest training sigma."""
    if config["final_sigmas_type"] == "zero":
        return np.float32(0)
    return np.float32(train_sigmas(acp[:1])[0])


def check_history(index: int, expected: int, name: str) -> None:
    if index != expected:
        raise DifforgeError(
            f"{name} keeps a history of earlier steps: step {expected} is next, not {index} "
            "(a fresh sampler per generation, stepped in order)"
        )
