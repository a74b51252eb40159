"""The sampling loop: for each step, ask the policy what runs, run the denoiser (doubled for
classifier-free guidance), combine the guidance, and step the sampler."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from difforge.artifact.schedulers.base import Scheduler
from difforge.artifact.step_plan import STEP_VARIANT
from difforge.runtime.guidance import combine, ndcfg
from difforge.runtime.policy import StepCall, StepPolicy
from difforge.runtime.runners.base import Runner

StepCallback = Callable[[int, int], None]


@dataclass
class LoopResult:
    latents: np.ndarray
    step_seconds: list[float] = field(default_factory=list)
    #: the variant each step ran
    schedule: list[str] = field(default_factory=list)


class Denoiser:
    """Runs one step's denoiser calls and combines them into one noise prediction."""

    def __init__(self, runners: dict[str, Runner], policy: StepPolicy, uncond_first: bool):
        self.runners = runners
        self.policy = policy
        self.uncond_first = uncond_first

    def call(
        self,
        component: str,
        sample: np.ndarray,
        t: np.floating | float,
        cond: dict[str, np.ndarray],
        extra: dict[str, np.ndarray],
    ) -> dict[str, np.ndarray]:
        feeds = {
            "sample": sample,
            "timestep": np.full((sample.shape[0],), t, dtype=np.float32),
            **cond,
            **extra,
        }
        return self.runners[component].infer(feeds)

    def predict(
        self,
        step: StepCall,
        model_in: np.ndarray,
        t: np.floating | float,
        cond: dict[str, np.ndarray],
        scale: float,
        cfg: bool,
    ) -> np.ndarray:
        mode = step.guidance if cfg else None
        # Noise-damped CFG: the guidance direction comes from the step's own variant or a
        # named strong one, the unconditional half from a weak variant (its rules per step,
        # else its named variant).
        component = step.component
        if mode is not None and mode.strong != STEP_VARIANT:
            component = self.policy.component(mode.strong)
        outputs = self.call(component, model_in, t, cond, step.feeds)
        self.policy.keep(outputs)
        eps = outputs["noise_pred"]
        if not cfg:
            return eps
        if mode is None:
            return combine(eps, scale, self.uncond_first)
        weak = self.policy.component(self.policy.weak_variant(mode, step.index))
        half = model_in.shape[0] // 2
        # the unconditional half: [uncond, text] for text models, [class, null] for class ones
        rows = slice(0, half) if self.uncond_first else slice(half, None)
        uncond = {k: v[rows] for k, v in cond.items()}
        weak_uncond = self.call(weak, model_in[rows], t, uncond, step.feeds)["noise_pred"]
        first, second = np.split(eps, 2)
        strong_uncond, strong_cond = (first, second) if self.uncond_first else (second, first)
        return ndcfg(weak_uncond, strong_uncond, strong_cond, scale)


def sample(
    denoiser: Denoiser,
    sched: Scheduler,
    latents: np.ndarray,
    cond: dict[str, np.ndarray],
    scale: float,
    cfg: bool,
    rng: np.random.Generator | None,
    callback: StepCallback | None = None,
) -> LoopResult:
    """Run every step of ``sched`` from ``latents``; per-step denoiser time is measured
    around the denoiser calls alone."""
    num_steps = len(sched.timesteps)
    result = LoopResult(latents)
    for i, t in enumerate(sched.timesteps):
        model_in = np.concatenate([latents, latents]) if cfg else latents
        model_in = sched.scale_model_input(model_in, i)
        step = denoiser.policy.at(i)
        result.schedule.append(step.variant)
        s0 = time.perf_counter()
        eps = denoiser.predict(step, model_in, t, cond, scale, cfg)
        result.step_seconds.append(time.perf_counter() - s0)
        latents = sched.step(eps.astype(np.float32), i, latents, rng)
        if callback is not None:
            callback(i + 1, num_steps)
    result.latents = latents
    return result
