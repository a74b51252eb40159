"""The torch-free generation loop: conditioning, the sampler loop, decoding.

It follows the diffusers pipelines step for step (classifier-free guidance order, scaling,
post-processing), so that the same latents give the same image; the tests hold it to that.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from difforge.errors import DifforgeError
from difforge.runtime.manifest import Manifest
from difforge.runtime.runners.base import Runner
from difforge.runtime.schedulers import (
    FAMILY,
    SCHEDULERS,
    Scheduler,
    create_scheduler,
    packed_seq_len,
)
from difforge.runtime.step_plan import StepPlan
from difforge.runtime.tokenizer import CLIPTokenizer

StepCallback = Callable[[int, int], None]


@dataclass
class GenerateRequest:
    """What to generate. ``prompt`` for text-to-image artifacts, ``class_label`` for class ones
    (class 0 when left out); giving the other kind's conditioning is an error."""

    prompt: str | list[str] = ""
    negative_prompt: str = ""
    class_label: int | list[int] | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    seed: int = 0
    height: int | None = None
    width: int | None = None
    scheduler: str | None = None
    #: Explicit initial noise (N, C, h, w); by default drawn from ``seed``.
    latents: np.ndarray | None = None


@dataclass
class GenerateResult:
    images: np.ndarray  # uint8, (N, H, W, 3)
    timings: dict[str, float]
    step_seconds: list[float] = field(default_factory=list)
    request: dict[str, Any] = field(default_factory=dict)


class Pipeline:
    """Generates images from a loaded artifact; one runner per component role."""

    def __init__(self, root: Path, manifest: Manifest, runners: dict[str, Runner]) -> None:
        self.root = root
        self.manifest = manifest
        self.runners = runners
        self.kind = manifest.pipeline["type"]
        self.plan = StepPlan.from_manifest(manifest.step_plan)
        self.tokenizer: CLIPTokenizer | None = None
        if self.text_conditioned:
            tok = manifest.tokenizer or {}
            self.tokenizer = CLIPTokenizer(
                root / tok["vocab"], root / tok["merges"], int(tok.get("max_length", 77))
            )

    @property
    def text_conditioned(self) -> bool:
        """Whether this artifact takes prompts (else class labels)."""
        return self.kind in ("text-to-image", "flux")

    def example_request(self, batch: int = 1, **settings: Any) -> GenerateRequest:
        """A request for ``batch`` images that fits this artifact (profiling, benchmarks): one
        fixed prompt, or classes 0, 1, 2, ... ``settings`` are the other request fields."""
        if self.text_conditioned:
            prompt = "a photo of a cat"
            return GenerateRequest(prompt=prompt if batch == 1 else [prompt] * batch, **settings)
        classes = int(self.manifest.pipeline["num_classes"])
        labels = [i % classes for i in range(batch)]
        return GenerateRequest(class_label=labels[0] if batch == 1 else labels, **settings)

    def prompt_notes(self, request: GenerateRequest) -> list[str]:
        """What the user should know about the prompts: the text encoder reads a fixed window
        of tokens and drops the rest (diffusers warns of the same)."""
        if self.tokenizer is None:
            return []
        prompts = [request.prompt] if isinstance(request.prompt, str) else list(request.prompt)
        window = self.tokenizer.max_length - 2
        notes = []
        for what, text in [("prompt", p) for p in prompts] + [
            ("negative prompt", request.negative_prompt)
        ]:
            dropped = self.tokenizer.dropped(text)
            if dropped:
                notes.append(
                    f"the {what} is {window + dropped} tokens; the text encoder reads the first "
                    f"{window}, the last {dropped} are ignored"
                )
        return list(dict.fromkeys(notes))  # one note for a prompt repeated per image

    # -- request checking -------------------------------------------------------------
    def resolve(self, request: GenerateRequest) -> GenerateRequest:
        """Fill defaults from the manifest and refuse what the artifact cannot do."""
        self._check_conditioning(request)
        pipe = self.manifest.pipeline
        res = pipe["resolution"]
        height = request.height if request.height is not None else res["default"]
        width = request.width if request.width is not None else res["default"]
        for label, size in (("height", height), ("width", width)):
            if not res["min"] <= size <= res["max"]:
                raise DifforgeError(
                    f"{label} {size} is outside this artifact's range "
                    f"[{res['min']}, {res['max']}] (rebuild with a wider --resolution range)"
                )
            if size % res["multiple"]:
                raise DifforgeError(
                    f"{label} {size} is not a multiple of {res['multiple']} (the model's factor)"
                )
        scheduler = request.scheduler or self.manifest.scheduler["name"]
        if scheduler not in SCHEDULERS:
            known = ", ".join(sorted(SCHEDULERS))
            raise DifforgeError(f"unknown scheduler '{scheduler}' (known: {known})")
        if FAMILY.get(scheduler) != FAMILY.get(self.manifest.scheduler["name"]):
            raise DifforgeError(
                f"scheduler '{scheduler}' does not fit this model, which was trained for "
                f"'{self.manifest.scheduler['name']}'-family sampling"
            )
        steps = request.steps
        if steps is None:
            steps = int(self.manifest.scheduler.get("default_steps", 20))
        if steps < 1:
            raise DifforgeError(f"--steps must be at least 1, got {steps}")
        if request.seed < 0:  # numpy's generators take non-negative seeds only
            raise DifforgeError(f"--seed must be 0 or more, got {request.seed}")
        guidance = (
            request.guidance_scale
            if request.guidance_scale is not None
            else float(pipe.get("default_guidance", 1.0))
        )
        if guidance < 0:
            raise DifforgeError(f"--guidance must be 0 or more, got {guidance:g}")
        if self.kind == "flux" and guidance > 1.0:
            raise DifforgeError(
                "this FLUX-style model has no classifier-free guidance (it is guidance-"
                "distilled or guidance-free); leave --guidance unset"
            )
        if request.negative_prompt and not (guidance > 1.0 and not self.guidance_input):
            why = (
                "this FLUX-style model runs no classifier-free guidance"
                if self.kind == "flux"
                else f"guidance {guidance:g} runs no classifier-free guidance (it needs > 1)"
            )
            raise DifforgeError(f"a negative prompt would have no effect: {why}")
        batch, most = self._batch_size(request), self.images_per_call(guidance)
        if batch > most:
            raise DifforgeError(
                f"{batch} images in one call, but this artifact takes at most {most} at "
                f"guidance {guidance:g} (split the request, or rebuild with a larger --max-batch)"
            )
        resolved = GenerateRequest(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            class_label=request.class_label,
            steps=steps,
            guidance_scale=guidance,
            seed=request.seed,
            height=height,
            width=width,
            scheduler=scheduler,
            latents=request.latents,
        )
        self._scheduler(resolved)  # a step count the sampler cannot take fails here
        return resolved

    def _scheduler(self, req: GenerateRequest) -> Scheduler:
        """The sampler for a resolved request (its config errors are user errors)."""
        assert req.scheduler and req.steps is not None
        assert req.height is not None and req.width is not None
        factor = int(self.manifest.pipeline["vae_scale_factor"])
        return create_scheduler(
            req.scheduler,
            self.manifest.scheduler["config"],
            req.steps,
            image_seq_len=packed_seq_len(req.height, req.width, factor),
        )

    def _check_conditioning(self, req: GenerateRequest) -> None:
        """The request conditions the way this artifact does, with one entry per image."""
        if self.text_conditioned:
            if req.class_label is not None:
                raise DifforgeError(f"this {self.kind} artifact takes a prompt, not a class label")
            count = 1 if isinstance(req.prompt, str) else len(req.prompt)
            what = "prompts"
        else:
            classes = int(self.manifest.pipeline["num_classes"])
            if req.prompt or req.negative_prompt:
                raise DifforgeError(
                    f"this class-to-image artifact ({classes} classes) takes a class label, "
                    "not a prompt"
                )
            labels = self._labels(req)
            for label in labels:
                if not 0 <= label < classes:
                    raise DifforgeError(f"class label {label} is outside [0, {classes - 1}]")
            count = len(labels)
            what = "class labels"
        if count == 0:
            raise DifforgeError(f"the request has no {what}: nothing to generate")
        if req.latents is not None and count not in (1, len(req.latents)):
            raise DifforgeError(
                f"{count} {what} for {len(req.latents)} initial latents: give one, or one each"
            )

    @staticmethod
    def _labels(req: GenerateRequest) -> list[int]:
        if req.class_label is None:
            return [0]
        return [req.class_label] if isinstance(req.class_label, int) else list(req.class_label)

    # -- stages -----------------------------------------------------------------------
    def _denoise(
        self,
        variant: str,
        sample: np.ndarray,
        t: np.floating | float,
        cond: dict[str, np.ndarray],
        extra: dict[str, np.ndarray],
    ) -> np.ndarray:
        runner = self.runners[self.plan.variants[variant]]
        feeds = {
            "sample": sample,
            "timestep": np.full((sample.shape[0],), t, dtype=np.float32),
            **cond,
            **extra,
        }
        return runner.infer(feeds)["noise_pred"]

    def images_per_call(self, guidance_scale: float) -> int:
        """Most images one generation call may hold: the smallest batch range of the
        components, the denoiser's and text encoder's halved when classifier-free guidance
        doubles every image."""
        cfg = guidance_scale > 1.0 and not self.guidance_input
        tops = []
        for key, entry in self.manifest.components.items():
            limits = entry.axes.get("batch")
            if limits is None:
                continue
            doubled = cfg and key.partition("@")[0] in ("denoiser", "text_encoder")
            tops.append(int(limits[2]) // (2 if doubled else 1))
        return max(1, min(tops, default=1))

    @property
    def guidance_input(self) -> bool:
        """A guidance-distilled model: the scale is a denoiser input, not two passes."""
        return bool(self.manifest.pipeline.get("guidance_input"))

    def _ndcfg(
        self,
        variant: str,
        index: int,
        num_steps: int,
        model_in: np.ndarray,
        t: np.floating | float,
        cond: dict[str, np.ndarray],
        extra: dict[str, np.ndarray],
        mode: dict[str, Any],
        scale: float,
    ) -> np.ndarray:
        """Noise-damped CFG: the weak variant's unconditional half replaces the strong one's.

        The strong pass is the step's own variant (``"strong": "step_rules"``) or a named one;
        the weak pass follows ``weak_rules`` when given, else the named ``weak`` variant.
        """
        from difforge.runtime.guidance import ndcfg, variant_at

        strong_variant = variant if mode.get("strong") == "step_rules" else str(mode["strong"])
        weak_rules = mode.get("weak_rules") or []
        weak_variant = (
            variant_at(weak_rules, self.plan.default_variant, index, num_steps)
            if weak_rules
            else str(mode["weak"])
        )
        strong = self._denoise(strong_variant, model_in, t, cond, extra)
        half = model_in.shape[0] // 2
        uncond_cond = {k: v[:half] for k, v in cond.items()}  # [uncond, text] order
        weak_uncond = self._denoise(weak_variant, model_in[:half], t, uncond_cond, extra)
        strong_uncond, strong_cond = np.split(strong, 2)
        return ndcfg(weak_uncond, strong_uncond, strong_cond, scale)

    def _conditioning(self, req: GenerateRequest, batch: int, cfg: bool) -> dict[str, np.ndarray]:
        if self.text_conditioned:
            assert self.tokenizer is not None  # set in __init__ for these kinds
            prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
            if len(prompts) == 1 and batch > 1:
                prompts = prompts * batch
            texts = ([req.negative_prompt] * len(prompts) if cfg else []) + prompts
            ids = self.tokenizer(texts)
            out = self.runners["text_encoder"].infer({"input_ids": ids})
            cond = {"encoder_hidden_states": out["last_hidden_state"]}
            if self.kind == "flux":
                cond["pooled_projections"] = out["pooler_output"]
            return cond
        labels = self._labels(req)
        if len(labels) == 1 and batch > 1:
            labels = labels * batch
        null = [int(self.manifest.pipeline["null_class"])] * len(labels)
        # DiT order: conditional half first, then the null class.
        return {"class_labels": np.asarray(labels + (null if cfg else []), dtype=np.int64)}

    def _batch_size(self, req: GenerateRequest) -> int:
        if req.latents is not None:
            return int(req.latents.shape[0])
        if self.text_conditioned:
            return 1 if isinstance(req.prompt, str) else len(req.prompt)
        return len(self._labels(req))

    def _initial_latents(self, req: GenerateRequest, batch: int, sched: Scheduler) -> np.ndarray:
        pipe = self.manifest.pipeline
        assert req.height is not None and req.width is not None
        shape = (
            batch,
            int(pipe["latent_channels"]),
            req.height // int(pipe["vae_scale_factor"]),
            req.width // int(pipe["vae_scale_factor"]),
        )
        if req.latents is not None:
            if tuple(req.latents.shape) != shape:
                raise DifforgeError(f"latents have shape {req.latents.shape}, expected {shape}")
            latents = req.latents.astype(np.float32)
        else:
            latents = np.random.default_rng(req.seed).standard_normal(shape, dtype=np.float32)
        return (latents * np.float32(sched.init_noise_sigma)).astype(np.float32)

    def __call__(
        self, request: GenerateRequest, callback: StepCallback | None = None
    ) -> GenerateResult:
        start = time.perf_counter()
        req = self.resolve(request)
        assert req.steps is not None and req.guidance_scale is not None and req.scheduler
        timings: dict[str, float] = {}
        assert req.height is not None and req.width is not None
        sched = self._scheduler(req)
        cfg = req.guidance_scale > 1.0 and not self.guidance_input
        batch = self._batch_size(req)

        t0 = time.perf_counter()
        cond = self._conditioning(req, batch, cfg)
        if self.guidance_input:
            cond["guidance"] = np.full((batch,), req.guidance_scale, dtype=np.float32)
        timings["conditioning"] = time.perf_counter() - t0

        latents = self._initial_latents(req, batch, sched)
        rng = np.random.default_rng([req.seed, 1]) if sched.stochastic else None
        num_steps = len(sched.timesteps)
        tables = self.plan.tables(num_steps, req.seed)
        schedule: list[str] = []
        step_seconds: list[float] = []
        loop_start = time.perf_counter()
        for i, t in enumerate(sched.timesteps):
            model_in = np.concatenate([latents, latents]) if cfg else latents
            model_in = sched.scale_model_input(model_in, i)
            variant = self.plan.variant_at(i, num_steps)
            schedule.append(variant)
            extra = self.plan.feeds_at(tables, i)
            s0 = time.perf_counter()
            mode = self.plan.guidance_at(i, num_steps) if cfg else None
            if mode is not None and mode.get("mode") == "ndcfg":
                eps = self._ndcfg(
                    variant, i, num_steps, model_in, t, cond, extra, mode, req.guidance_scale
                )
            else:
                eps = self._denoise(variant, model_in, t, cond, extra)
                if cfg:
                    first, second = np.split(eps, 2)
                    if self.kind == "text-to-image":  # [uncond, text]
                        eps = first + req.guidance_scale * (second - first)
                    else:  # [cond, null]
                        eps = second + req.guidance_scale * (first - second)
            step_seconds.append(time.perf_counter() - s0)
            latents = sched.step(eps.astype(np.float32), i, latents, rng)
            if callback is not None:
                callback(i + 1, num_steps)
        loop = time.perf_counter() - loop_start
        timings["denoiser"] = sum(step_seconds)
        timings["scheduler_and_host"] = loop - timings["denoiser"]

        if "vae_decoder" in self.runners:
            t0 = time.perf_counter()
            decoded = self.runners["vae_decoder"].infer({"latent": latents})["image"]
            timings["vae_decoder"] = time.perf_counter() - t0
        else:  # a pixel-space model: the samples are the images
            decoded = latents
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
            step_seconds=step_seconds,
            request={
                "steps": req.steps,
                "guidance_scale": req.guidance_scale,
                "seed": req.seed,
                "height": req.height,
                "width": req.width,
                "scheduler": req.scheduler,
                "batch": batch,
                "schedule": schedule,
            },
        )


def postprocess(decoded: np.ndarray) -> np.ndarray:
    """[-1, 1] NCHW floats to uint8 NHWC, rounded as diffusers' image processor does."""
    images = np.clip(decoded / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1)
    return (images * 255).round().astype(np.uint8)
