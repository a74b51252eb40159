"""The sampling loop: for each step, ask the policy what runs, run the denoiser (doubled for
classifier-free guidance), combine the guidance, and step the sampler."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
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
    """Runs one step's denoiser calls and combines them into one noise prediction per step."""

    def __init__(self, runners: dict[str, Runner], policy: StepPolicy, uncond_first: bool):
        self.runners = runners
        self.policy = policy
        self.uncond_first = uncond_first

    def call(
        self,
        component: str,
        sample: np.ndarray,
        ts: Sequence[np.floating | float],
        cond: dict[str, np.ndarray],
        extra: dict[str, np.ndarray],
    ) -> dict[str, np.ndarray]:
        """One call for the steps at timesteps ``ts``: each step's rows (the same inputs but
        the timestep) one after another on the batch axis. A graph without a ``sample`` input
        (a sample-free variant) is not given one; every other feed goes to the runner's
        checks."""
        runner = self.runners[component]
        rows = sample.shape[0]
        feeds = {**cond, **extra}
        if any(t.name == "sample" for t in runner.spec.inputs):
            feeds["sample"] = sample
        if len(ts) > 1:
            feeds = {k: np.concatenate([v] * len(ts)) for k, v in feeds.items()}
        feeds["timestep"] = np.repeat(np.asarray(ts, dtype=np.float32), rows)
        return runner.infer(feeds)

    def _steps(
        self, step: StepCall, model_in: np.ndarray, ts: Sequence[np.floating | float],
        cond: dict[str, np.ndarray],
    ) -> list[np.ndarray]:
        """Each step's noise prediction (guidance not yet combined), in calls of at most the
        graph's batch range."""
        rows = model_in.shape[0]
        axes = self.runners[step.component].spec.axes
        per_call = max(1, axes["batch"][2] // rows) if "batch" in axes else 1
        out: list[np.ndarray] = []
        for first in range(0, len(ts), per_call):
            chunk = ts[first : first + per_call]
            outputs = self.call(step.component, model_in, chunk, cond, step.feeds)
            self.policy.keep(outputs)
            out += np.split(outputs["noise_pred"], len(chunk))
        return out

    def predict(
        self,
        step: StepCall,
        model_in: np.ndarray,
        ts: Sequence[np.floating | float],
        cond: dict[str, np.ndarray],
        scale: float,
        cfg: bool,
    ) -> list[np.ndarray]:
        """The guided noise prediction of each step in ``step.steps`` (timesteps ``ts``)."""
        mode = step.guidance if cfg else None
        if mode is None:
            preds = self._steps(step, model_in, ts, cond)
            return [combine(e, scale, self.uncond_first) if cfg else e for e in preds]
        # Noise-damped CFG (one step per call): the guidance direction comes from the step's
        # own variant or a named strong one, the unconditional half from a weak variant (its
        # rules per step, else its named variant).
        t = ts[0]
        component = step.component
        if mode.strong != STEP_VARIANT:
            component = self.policy.component(mode.strong)
        outputs = self.call(component, model_in, [t], cond, step.feeds)
        self.policy.keep(outputs)
        eps = outputs["noise_pred"]
        weak = self.policy.component(self.policy.weak_variant(mode, step.index))
        half = model_in.shape[0] // 2
        # the unconditional half: [uncond, text] for text models, [class, null] for class ones
        rows = slice(0, half) if self.uncond_first else slice(half, None)
        uncond = {k: v[rows] for k, v in cond.items()}
        weak_uncond = self.call(weak, model_in[rows], [t], uncond, step.feeds)["noise_pred"]
        first, second = np.split(eps, 2)
        strong_uncond, strong_cond = (first, second) if self.uncond_first else (second, first)
        return [ndcfg(weak_uncond, strong_uncond, strong_cond, scale)]


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
    around the denoiser calls alone (a call that serves several steps is shared evenly among
    them)."""
    num_steps = len(sched.timesteps)
    result = LoopResult(latents)
    initial = latents
    ready: dict[int, tuple[str, np.ndarray, float]] = {}
    for i, t in enumerate(sched.timesteps):
        if i not in ready:
            model_in = np.concatenate([latents, latents]) if cfg else latents
            model_in = sched.scale_model_input(model_in, i)
            step = denoiser.policy.at(i)
            if cfg and step.per_image:
                step.feeds.update({k: np.concatenate([step.feeds[k]] * 2) for k in step.per_image})
            ts = [sched.timesteps[j] for j in step.steps]
            s0 = time.perf_counter()
            preds = denoiser.predict(step, model_in, ts, cond, scale, cfg)
            share = (time.perf_counter() - s0) / len(step.steps)
            ready.update(
                (j, (step.variant, e, share)) for j, e in zip(step.steps, preds, strict=True)
            )
        variant, eps, seconds = ready.pop(i)
        result.schedule.append(variant)
        result.step_seconds.append(seconds)
        noise = denoiser.policy.prior_noise(t)
        if noise:
            latents = (latents + np.float32(noise) * initial).astype(np.float32)
        before = latents
        latents = sched.step(eps.astype(np.float32), i, latents, rng)
        denoiser.policy.observe(i, before, latents)
        if callback is not None:
            callback(i + 1, num_steps)
    result.latents = latents
    return result
