"""The torch-free generation pipeline: request -> conditioning -> sampling loop -> decoding.

It follows the diffusers pipelines step for step (classifier-free guidance order, scaling,
post-processing), so that the same latents give the same image; the tests hold it to that.
Each part is its own module: ``request`` (checks and defaults), ``conditioning``, ``policy``
(what each step runs), ``loop`` (the sampler loop), ``guidance``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from difforge.artifact.manifest import Manifest
from difforge.artifact.schedulers.base import Scheduler
from difforge.runtime.conditioning import Conditioner
from difforge.runtime.loop import Denoiser, StepCallback, sample
from difforge.runtime.policy import StepPolicy
from difforge.runtime.request import (
    GenerateRequest,
    GenerateResult,
    ResolvedRequest,
    images_per_call,
    resolve_request,
)
from difforge.runtime.runners.base import Runner

__all__ = ["GenerateRequest", "GenerateResult", "Pipeline", "StepCallback", "postprocess"]


class Pipeline:
    """Generates images from a loaded artifact; one runner per component key."""

    def __init__(self, root: Path, manifest: Manifest, runners: dict[str, Runner]) -> None:
        self.root = root
        self.manifest = manifest
        self.runners = runners
        self.kind = manifest.pipeline.type
        self.plan = manifest.plan
        self.policy = StepPolicy(self.plan, manifest.components)
        self.conditioner = Conditioner(root, manifest, runners)
        self.tokenizer = self.conditioner.tokenizer

    @property
    def text_conditioned(self) -> bool:
        """Whether this artifact takes prompts (else class labels)."""
        return self.manifest.pipeline.text_conditioned

    @property
    def notes(self) -> list[str]:
        """What the runners adjusted that the user should know (threads lowered to the
        machine's cores, say), each note once."""
        return list(dict.fromkeys(n for r in self.runners.values() for n in r.notes))

    @property
    def guidance_input(self) -> bool:
        """A guidance-distilled model: the scale is a denoiser input, not two passes."""
        return self.manifest.pipeline.guidance_input

    def example_request(self, batch: int = 1, **settings: Any) -> GenerateRequest:
        """A request for ``batch`` images that fits this artifact (profiling, benchmarks): one
        fixed prompt, or classes 0, 1, 2, ... ``settings`` are the other request fields."""
        if self.text_conditioned:
            prompt = "a photo of a cat"
            return GenerateRequest(prompt=prompt if batch == 1 else [prompt] * batch, **settings)
        classes = self.manifest.pipeline.num_classes
        labels = [i % classes for i in range(batch)]
        return GenerateRequest(class_label=labels[0] if batch == 1 else labels, **settings)

    def prompt_notes(self, request: GenerateRequest) -> list[str]:
        """What the user should know about the prompts (a prompt longer than the text
        encoder's token window is cut, as diffusers does)."""
        prompts = [request.prompt] if isinstance(request.prompt, str) else list(request.prompt)
        return self.conditioner.prompt_notes(prompts, request.negative_prompt)

    def resolve(self, request: GenerateRequest) -> ResolvedRequest:
        """Fill defaults from the manifest and refuse what the artifact cannot do."""
        return resolve_request(self.manifest, request)

    def images_per_call(self, guidance_scale: float) -> int:
        """Most images one call may hold at ``guidance_scale`` (CFG doubles each image)."""
        return images_per_call(self.manifest, guidance_scale)

    def _initial_latents(self, req: ResolvedRequest, sched: Scheduler) -> np.ndarray:
        pipe = self.manifest.pipeline
        f = pipe.vae_scale_factor
        shape = (req.batch, pipe.latent_channels, req.height // f, req.width // f)
        if req.latents is not None:  # shape and values checked by resolve
            latents = req.latents.astype(np.float32)
        else:
            latents = np.random.default_rng(req.seed).standard_normal(shape, dtype=np.float32)
        return (latents * np.float32(sched.init_noise_sigma)).astype(np.float32)

    def __call__(
        self, request: GenerateRequest, callback: StepCallback | None = None
    ) -> GenerateResult:
        start = time.perf_counter()
        req = self.resolve(request)
        sched = req.sampler(self.manifest)
        if self.manifest.plan.selection is not None:
            self.manifest.plan.selection.check_sampler(sched.name)
        timings: dict[str, float] = {}

        t0 = time.perf_counter()
        cond = self.conditioner(req)
        timings["conditioning"] = time.perf_counter() - t0

        latents = self._initial_latents(req, sched)
        rng = np.random.default_rng([req.seed, 1]) if sched.stochastic else None
        self.policy.start(len(sched.timesteps), req.seed)
        denoiser = Denoiser(self.runners, self.policy, uncond_first=self.text_conditioned)
        loop_start = time.perf_counter()
        done = sample(denoiser, sched, latents, cond, req.guidance_scale, req.cfg, rng, callback)
        loop = time.perf_counter() - loop_start
        timings["denoiser"] = sum(done.step_seconds)
        timings["scheduler_and_host"] = loop - timings["denoiser"]

        if "vae_decoder" in self.runners:
            t0 = time.perf_counter()
            decoded = self.runners["vae_decoder"].infer({"latent": done.latents})["image"]
            timings["vae_decoder"] = time.perf_counter() - t0
        else:  # a pixel-space model: the samples are the images
            decoded = done.latents
            timings["vae_decoder"] = 0.0
        images = postprocess(decoded)
        timings["total"] = time.perf_counter() - start
        # Host work outside the loop (request checks, scheduler set-up, initial noise, uint8
        # conversion) is host time too: with it the stages add up to the total.
        timings["scheduler_and_host"] += timings["total"] - sum(
            v for k, v in timings.items() if k != "total"
        )
        return GenerateResult(
            images=images,
            timings=timings,
            step_seconds=done.step_seconds,
            request={
                "steps": req.steps,
                "guidance_scale": req.guidance_scale,
                "seed": req.seed,
                "height": req.height,
                "width": req.width,
                "scheduler": req.scheduler,
                "batch": req.batch,
                "schedule": done.schedule,
            },
        )


def postprocess(decoded: np.ndarray) -> np.ndarray:
    """[-1, 1] NCHW floats to uint8 NHWC, rounded as diffusers' image processor does."""
    images = np.clip(decoded / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)
    return (images * 255).round().astype(np.uint8)
