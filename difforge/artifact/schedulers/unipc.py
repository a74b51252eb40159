"""UniPC, as diffusers' ``UniPCMultistepScheduler`` (by default B(h) = e^h − 1 ('bh2'),
order 2, data prediction).

Each step first corrects the sample it is given (UniC, from this step's model output and the
previous step's prediction; skipped for the steps in ``disable_corrector``), then predicts the
next one (UniP) from the last ``order`` model outputs. The order warms up from 1 and, with
``lower_order_final``, falls again over the last steps. The history (converted outputs, the
sample before the last prediction, its order) lives on the instance: a fresh sampler per
generation, stepped in order.
"""

from __future__ import annotations

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
from difforge.errors import DifforgeError

_ONE = np.float32(1)


class UniPC(Scheduler):
    name = "unipc"
    supported: ClassVar[dict[str, tuple[Any, ...] | None]] = {
        **MULTISTEP_SUPPORTED,
        "solver_order": (1, 2, 3),
        # DPM-Solver's solver types are read as bh2, as diffusers does
        "solver_type": ("bh1", "bh2", "midpoint", "heun", "logrho"),
        "predict_x0": (True, False),
        "lower_order_final": (True, False),
        "use_karras_sigmas": (True, False),
        "solver_p": (None,),
        "shift_terminal": (None,),
    }
    defaults: ClassVar[dict[str, Any]] = {
        **MULTISTEP_DEFAULTS,
        "solver_type": "bh2",
        "predict_x0": True,
        "disable_corrector": [],
    }

    def __init__(self, config: dict[str, Any], num_steps: int) -> None:
        super().__init__(config, num_steps)
        self.check_config(self.config)
        cfg = self.config
        self._check_final(cfg)
        skip = cfg["disable_corrector"]
        if not isinstance(skip, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in skip
        ):
            raise DifforgeError(
                f"scheduler config disable_corrector={skip!r} is not a list of step numbers"
            )
        self.skip_corrector = frozenset(skip)
        acp = alphas_cumprod(cfg)
        sigmas = train_sigmas(acp)
        timesteps = multistep_timesteps(cfg, num_steps, len(acp))
        if cfg["use_karras_sigmas"]:
            lo, hi = cfg.get("sigma_min"), cfg.get("sigma_max")
            chosen = karras(sigmas[::-1], num_steps, lo, hi)
            timesteps = sigma_to_t(chosen, np.log(sigmas)).round().astype(np.int64)
            zero = cfg["final_sigmas_type"] == "zero"
            last = np.float32(0) if zero else np.float32(chosen[-1])
        else:
            chosen = np.interp(timesteps, np.arange(len(sigmas)), sigmas)
            last = final_sigma(cfg, acp)
        self.sigmas = np.concatenate([chosen, [last]]).astype(np.float32)
        self.timesteps = timesteps.astype(np.float32)
        self.order = int(cfg["solver_order"])
        self.x0_mode = bool(cfg["predict_x0"])
        self.bh1 = cfg["solver_type"] == "bh1"
        self._outputs: list[np.ndarray] = []
        self._last_sample: np.ndarray | None = None
        self._last_order = 0
        self._next = 0

    def _check_final(self, cfg: dict[str, Any]) -> None:
        """diffusers' last step onto a zero sigma divides by zero in these settings (NaN or
        inf images): refused here."""
        if cfg["final_sigmas_type"] != "zero":
            return
        breaking = (("solver_type", "bh1"), ("predict_x0", False), ("lower_order_final", False))
        for key, bad in breaking:
            if cfg[key] == bad:
                raise DifforgeError(
                    f"scheduler 'unipc' does not support {key}={bad!r} with "
                    "final_sigmas_type='zero' (its last step divides by zero, in diffusers too); "
                    "set final_sigmas_type='sigma_min'"
                )

    def _convert(self, model_output: np.ndarray, sample: np.ndarray, index: int) -> np.ndarray:
        """The model output as x̂₀ (``predict_x0``) or as ε̂."""
        alpha, sigma, _ = alpha_sigma_lambda(self.sigmas[index])
        kind = self.config["prediction_type"]
        if self.x0_mode:
            if kind == "epsilon":
                return (sample - sigma * model_output) / alpha
            if kind == "sample":
                return model_output
            return alpha * sample - sigma * model_output
        if kind == "epsilon":
            return model_output
        if kind == "sample":
            return (sample - alpha * model_output) / sigma
        return alpha * model_output + sigma * sample

    def _update(
        self, x: np.ndarray, s0: int, t: int, order: int, earlier: list[int], new: np.ndarray | None
    ) -> np.ndarray:
        """One B(h) update of ``x`` from sigma index ``s0`` to ``t`` with the stored outputs:
        the predictor (``new`` is None) or the corrector (``new`` is the output at ``t``).
        ``earlier`` are the sigma indices of the older outputs used, newest first."""
        alpha_t, sigma_t, lam_t = alpha_sigma_lambda(self.sigmas[t])
        alpha_s0, sigma_s0, lam_s0 = alpha_sigma_lambda(self.sigmas[s0])
        h = lam_t - lam_s0
        m0 = self._outputs[-1]
        rks: list[np.float32] = []
        d1s: list[np.ndarray] = []
        for k, si in enumerate(earlier, start=1):
            rk = (alpha_sigma_lambda(self.sigmas[si])[2] - lam_s0) / h
            rks.append(rk)
            d1s.append((self._outputs[-(k + 1)] - m0) / rk)
        rks.append(_ONE)
        hh = -h if self.x0_mode else h
        h_phi_1 = np.expm1(hh)
        b_h = hh if self.bh1 else np.expm1(hh)
        rows: list[np.ndarray] = []
        b: list[np.float32] = []
        factorial = 1
        # a last step between two equal sigmas (Karras with final_sigmas_type='sigma_min') has
        # h = 0: its b is 0/0, unused by the first-order step it is
        with np.errstate(invalid="ignore", divide="ignore"):
            h_phi_k = h_phi_1 / hh - _ONE
            for i in range(1, order + 1):
                rows.append(np.power(np.asarray(rks, np.float32), np.float32(i - 1)))
                b.append(h_phi_k * np.float32(factorial) / b_h)
                factorial *= i + 1
                h_phi_k = h_phi_k / hh - np.float32(1 / factorial)
        r_mat, b_vec = np.stack(rows).astype(np.float32), np.asarray(b, np.float32)
        if self.x0_mode:
            base = sigma_t / sigma_s0 * x - alpha_t * h_phi_1 * m0
            scale = alpha_t * b_h
        else:
            base = alpha_t / alpha_s0 * x - sigma_t * h_phi_1 * m0
            scale = sigma_t * b_h
        if new is None:  # UniP
            if not d1s:
                return base
            if order == 2:
                rhos = np.full(1, 0.5, np.float32)
            else:
                rhos = np.linalg.solve(r_mat[:-1, :-1], b_vec[:-1]).astype(np.float32)
            return base - scale * _weighted(rhos, d1s)
        # UniC
        if order == 1:
            rhos = np.full(1, 0.5, np.float32)
        else:
            rhos = np.linalg.solve(r_mat, b_vec).astype(np.float32)
        res = rhos[-1] * (new - m0)
        if d1s:
            res = _weighted(rhos[:-1], d1s) + res
        return base - scale * res

    def step(
        self,
        model_output: np.ndarray,
        index: int,
        sample: np.ndarray,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        check_history(index, self._next, self.name)
        converted = self._convert(model_output, sample, index).astype(np.float32)
        if index > 0 and index - 1 not in self.skip_corrector and self._last_sample is not None:
            order = self._last_order
            earlier = [index - 1 - k for k in range(1, order)]
            sample = self._update(self._last_sample, index - 1, index, order, earlier, converted)
        self._outputs = [*self._outputs, converted][-self.order :]
        remaining = len(self.timesteps) - index
        order = min(self.order, remaining) if self.config["lower_order_final"] else self.order
        order = min(order, index + 1)  # warm-up: as many outputs as there are
        self._last_order = order
        self._last_sample = sample
        earlier = [index - k for k in range(1, order)]
        out = self._update(sample, index, index + 1, order, earlier, None)
        self._next += 1
        return out.astype(np.float32)


def _weighted(weights: np.ndarray, terms: list[np.ndarray]) -> np.ndarray:
    """Σ_k w_k·D_k, summed in order."""
    total = weights[0] * terms[0]
    for w, term in zip(weights[1:], terms[1:], strict=True):
        total = total + w * term
    return total
