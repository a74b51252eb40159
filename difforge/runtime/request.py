"""A generation request, checked against an artifact and filled from its defaults, before any
work: every refusal a request can get is said here, once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from difforge.artifact.manifest import Manifest
from difforge.artifact.schedulers import FAMILY, SCHEDULERS, create_scheduler, packed_seq_len
from difforge.artifact.schedulers.base import Scheduler
from difforge.errors import DifforgeError
from difforge.runtime.request_types import GenerateRequest, GenerateResult, checked

__all__ = [
    "GenerateRequest",
    "GenerateResult",
    "ResolvedRequest",
    "images_per_call",
    "resolve_request",
]


@dataclass(frozen=True)
class ResolvedRequest:
    """A request with every default filled in and every check passed."""

    steps: int
    guidance_scale: float
    seed: int
    height: int
    width: int
    scheduler: str
    negative_prompt: str
    #: one per image (text artifacts), else empty
    prompts: list[str]
    #: one per image (class artifacts), else empty
    labels: list[int]
    latents: np.ndarray | None
    batch: int
    #: whether classifier-free guidance doubles every denoiser call
    cfg: bool

    def sampler(self, manifest: Manifest) -> Scheduler:
        """The sampler for this request (its config errors are user errors)."""
        factor = manifest.pipeline.vae_scale_factor
        return create_scheduler(
            self.scheduler,
            manifest.scheduler.config,
            self.steps,
            image_seq_len=packed_seq_len(self.height, self.width, factor),
        )


def images_per_call(manifest: Manifest, guidance_scale: float) -> int:
    """Most images one generation call may hold: the smallest batch range of the components,
    the denoiser's and text encoder's halved when classifier-free guidance doubles every
    image."""
    cfg = guidance_scale > 1.0 and not manifest.pipeline.guidance_input
    tops = []
    for entry in manifest.components.values():
        limits = entry.axes.get("batch")
        if limits is None:
            continue
        doubled = cfg and entry.role in ("denoiser", "text_encoder")
        tops.append(int(limits[2]) // (2 if doubled else 1))
    return max(1, min(tops, default=1))


def _labels(req: GenerateRequest) -> list[int]:
    if req.class_label is None:
        return [0]
    return [req.class_label] if isinstance(req.class_label, int) else list(req.class_label)


def _conditioning(manifest: Manifest, req: GenerateRequest) -> tuple[list[str], list[int]]:
    """The request conditions the way this artifact does: (prompts, labels), one per image
    when several are given."""
    pipe = manifest.pipeline
    if pipe.text_conditioned:
        if req.class_label is not None:
            raise DifforgeError(f"this {pipe.type} artifact takes a prompt, not a class label")
        prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
        count, what, labels = len(prompts), "prompts", []
    else:
        if req.prompt or req.negative_prompt:
            raise DifforgeError(
                f"this class-to-image artifact ({pipe.num_classes} classes) takes a class "
                "label, not a prompt"
            )
        prompts, labels = [], _labels(req)
        for label in labels:
            if not 0 <= label < pipe.num_classes:
                raise DifforgeError(f"class label {label} is outside [0, {pipe.num_classes - 1}]")
        count, what = len(labels), "class labels"
    if count == 0:
        raise DifforgeError(f"the request has no {what}: nothing to generate")
    if req.latents is not None and count not in (1, len(req.latents)):
        raise DifforgeError(
            f"{count} {what} for {len(req.latents)} initial latents: give one, or one each"
        )
    return prompts, labels


def _scheduler_name(manifest: Manifest, requested: str | None) -> str:
    trained = manifest.scheduler.name
    scheduler = requested or trained
    if scheduler not in SCHEDULERS:
        known = ", ".join(sorted(SCHEDULERS))
        raise DifforgeError(f"unknown scheduler '{scheduler}' (known: {known})")
    if FAMILY.get(scheduler) != FAMILY.get(trained):
        raise DifforgeError(
            f"scheduler '{scheduler}' does not fit this model, which was trained for "
            f"'{trained}'-family sampling"
        )
    return scheduler


def _guidance(manifest: Manifest, req: GenerateRequest) -> float:
    pipe = manifest.pipeline
    guidance = (
        req.guidance_scale if req.guidance_scale is not None else float(pipe.default_guidance)
    )
    if guidance < 0:
        raise DifforgeError(f"--guidance must be 0 or more, got {guidance:g}")
    if pipe.type == "flux" and guidance > 1.0 and not pipe.guidance_input:
        raise DifforgeError(
            "this FLUX-style model takes no guidance (it is guidance-free, as FLUX.1-schnell); "
            "leave --guidance unset"
        )
    if req.negative_prompt and not (guidance > 1.0 and not pipe.guidance_input):
        why = (
            "this FLUX-style model runs no classifier-free guidance"
            if pipe.type == "flux"
            else f"guidance {guidance:g} runs no classifier-free guidance (it needs > 1)"
        )
        raise DifforgeError(f"a negative prompt would have no effect: {why}")
    return guidance


def resolve_request(manifest: Manifest, req: GenerateRequest) -> ResolvedRequest:
    """Fill defaults from the manifest and refuse what the artifact cannot do."""
    req = checked(req)
    prompts, labels = _conditioning(manifest, req)
    res = manifest.pipeline.resolution
    height = req.height if req.height is not None else res.default
    width = req.width if req.width is not None else res.default
    res.check("height", height)
    res.check("width", width)
    scheduler = _scheduler_name(manifest, req.scheduler)
    steps = req.steps if req.steps is not None else manifest.scheduler.default_steps
    if steps < 1:
        raise DifforgeError(f"--steps must be at least 1, got {steps}")
    guidance = _guidance(manifest, req)
    batch = int(req.latents.shape[0]) if req.latents is not None else len(prompts or labels)
    most = images_per_call(manifest, guidance)
    if batch > most:
        raise DifforgeError(
            f"{batch} images in one call, but this artifact takes at most {most} at "
            f"guidance {guidance:g} (split the request, or rebuild with a larger --max-batch)"
        )
    pipe = manifest.pipeline
    f = pipe.vae_scale_factor
    shape = (batch, pipe.latent_channels, height // f, width // f)
    if req.latents is not None and tuple(req.latents.shape) != shape:
        raise DifforgeError(f"latents have shape {req.latents.shape}, expected {shape}")
    if len(prompts) == 1 and batch > 1:
        prompts = prompts * batch
    if len(labels) == 1 and batch > 1:
        labels = labels * batch
    resolved = ResolvedRequest(
        steps=steps,
        guidance_scale=guidance,
        seed=req.seed,
        height=height,
        width=width,
        scheduler=scheduler,
        negative_prompt=req.negative_prompt,
        prompts=prompts,
        labels=labels,
        latents=req.latents,
        batch=batch,
        cfg=guidance > 1.0 and not manifest.pipeline.guidance_input,
    )
    resolved.sampler(manifest)  # a step count the sampler cannot take fails here
    return resolved
