"""DPM-Solver++(2M), as diffusers' ``DPMSolverMultistepScheduler`` with
``algorithm_type="dpmsolver++"`` and ``solver_order=2``.

A data-prediction solver in log-SNR: the first step (and the last, when ``lower_order_final``
or a zero final sigma asks for it) is first order; the others extrapolate x̂₀ linearly from
the previous step's, with the midpoint or Heun coefficients of ``solver_type``. With
``use_karras_sigmas`` the sigmas follow Karras et al.'s schedule and the timesteps fed to the
model are those sigmas' (rounded) timesteps. The previous x̂₀ is kept on the instance: a
fresh sampler per generation, stepped in order.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from difforge.artifact.schedulers.base import Scheduler, alphas_cumprod
from difforge.artifact.schedulers.multistep import (
    MULTISTEP_DEFAULTS,
    MULTISTEP_SUPPORTED,
    alpha_sigma_lambda,
    check_history,
    final_sigma,
    karras,
    multistep_timesteps,
    sigma_to_t,
    train_sigmas,
)


class DPMSolverPP2M(Scheduler):
    name = "dpm++2m"
    supported: ClassVar[dict[str, tuple[Any, ...] | None]] = {
        **MULTISTEP_SUPPORTED,
        # UniPC's solver types are read as midpoint, as diffusers does
        "algorithm_type": ("dpmsolver++",),
        "solver_order": (2,),
        "solver_type": ("midpoint", "heun", "logrho", "bh1", "bh2"),
        "use_lu_lambdas": (False,),
        "variance_type": (None,),
        "lower_order_final": (True, False),
        "euler_at_final": (True, False),
        "use_karras_sigmas": (True, False),
    }
    defaults: ClassVar[dict[str, Any]] = {
        **MULTISTEP_DEFAULTS,
        "algorithm_type": "dpmsolver++",
        "solver_type": "midpoint",
        "euler_at_final": False,
        "lambda_min_clipped": -math.inf,
    }

    def __init__(self, config: dict[str, Any], num_steps: int) -> None:
        super().__init__(config, num_steps)
        self.check_config(self.config)
        cfg = self.config
        acp = alphas_cumprod(cfg)
        sigmas = train_sigmas(acp)
        # λ clipping (cosine schedules): the schedule ends where λ(t) drops below the minimum
        with np.errstate(divide="ignore"):
            lam = np.log(np.sqrt(acp)) - np.log(np.sqrt(np.float32(1) - acp))
        clipped = int(np.searchsorted(lam[::-1], float(cfg["lambda_min_clipped"])))
        timesteps = multistep_timesteps(cfg, num_steps, len(acp) - clipped)
        if cfg["use_karras_sigmas"]:
            # a sigma_min / sigma_max in the config bound the schedule, as in diffusers
            chosen = karras(sigmas[::-1], num_steps, cfg.get("sigma_min"), cfg.get("sigma_max"))
            fractional = sigma_to_t(chosen, np.log(sigmas))
            if cfg.get("beta_schedule") != "squaredcos_cap_v2":
                fractional = fractional.round()
            timesteps = fractional.astype(np.int64)  # diffusers truncates the cosine ones
        else:
            chosen = np.interp(timesteps, np.arange(len(sigmas)), sigmas)
        last = final_sigma(cfg, acp)
        self.sigmas = np.concatenate([chosen, [last]]).astype(np.float32)
        self.timesteps = timesteps.astype(np.float32)
        self.heun = cfg["solver_type"] == "heun"
        self._previous: np.ndarray | None = None
        self._next = 0

    def _first_order(self, index: int) -> bool:
        if index == 0:
            return True
        if index < len(self.timesteps) - 1:
            return False
        cfg = self.config
        short = bool(cfg["lower_order_final"]) and len(self.timesteps) < 15
        return bool(cfg["euler_at_final"]) or short or cfg["final_sigmas_type"] == "zero"

    def _x0(self, model_output: np.ndarray, sample: np.ndarray, index: int) -> np.ndarray:
        alpha, sigma, _ = alpha_sigma_lambda(self.sigmas[index])
        kind = self.config["prediction_type"]
        if kind == "epsilon":
            return (sample - sigma * model_output) / alpha
        if kind == "sample":
            return model_output
        return alpha * sample - sigma * model_output  # v_prediction

    def step(
        self,
        model_output: np.ndarray,
        index: int,
        sample: np.ndarray,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        check_history(index, self._next, self.name)
        x0 = self._x0(model_output, sample, index)
        alpha_t, sigma_t, lam_t = alpha_sigma_lambda(self.sigmas[index + 1])
        _, sigma_s0, lam_s0 = alpha_sigma_lambda(self.sigmas[index])
        h = lam_t - lam_s0
        decay = alpha_t * (np.exp(-h) - np.float32(1))
        out = (sigma_t / sigma_s0) * sample - decay * x0  # = x0 onto a zero final sigma
        if not self._first_order(index):
            assert self._previous is not None
            _, _, lam_s1 = alpha_sigma_lambda(self.sigmas[index - 1])
            r0 = (lam_s0 - lam_s1) / h
            d1 = (np.float32(1) / r0) * (x0 - self._previous)
            if self.heun:
                out = out + (alpha_t * ((np.exp(-h) - np.float32(1)) / h + np.float32(1))) * d1
            else:
                out = out - np.float32(0.5) * decay * d1
        self._previous = x0
        self._next += 1
        return out.astype(np.float32)
