"""What a generation asks for and returns, and the request's fields checked for type and value
before anything reads them.

The Python API takes what callers pass: numpy integers are integers, a list of numbers is an
array; anything else (``steps=2.5``, ``seed=None``, a NaN guidance scale, latents holding
infinities, a prompt that is not valid Unicode) is a :class:`DifforgeError` naming the field,
never a TypeError deep in the loop or a black image.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from difforge.errors import DifforgeError


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
    #: each step's denoiser seconds (a batched call that served several steps shared evenly
    #: among them; the request's ``schedule`` says which graph served each step)
    step_seconds: list[float] = field(default_factory=list)
    request: dict[str, Any] = field(default_factory=dict)


#: the largest seed numpy's generators take here (seeds are 64-bit)
MAX_SEED = (1 << 64) - 1


def _integer(value: Any, what: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise DifforgeError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise DifforgeError(f"{what} must be an integer, got {value!r}") from None


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise DifforgeError(f"{what} must be text, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DifforgeError(
            f"the {what} is not valid Unicode text (it holds bytes that are not UTF-8)"
        ) from None
    return value


def _latents(value: Any) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise DifforgeError("latents must be an array of numbers (N, C, h, w)") from None
    if array.ndim != 4:
        raise DifforgeError(f"latents must have 4 dimensions (N, C, h, w), got {array.shape}")
    if not np.isfinite(array).all():
        raise DifforgeError("latents hold NaN or infinite values")
    return array


def checked(req: GenerateRequest) -> GenerateRequest:
    """``req`` (a GenerateRequest) with every field of the right type and finite."""
    prompt = req.prompt
    if isinstance(prompt, (list, tuple)):
        prompt = [_text(p, "prompt") for p in prompt]
    else:
        prompt = _text(prompt, "prompt")
    label = req.class_label
    if label is not None:
        if isinstance(label, (list, tuple, np.ndarray)):
            label = [_integer(v, "class_label") for v in np.asarray(label).ravel().tolist()]
        else:
            label = _integer(label, "class_label")
    guidance = req.guidance_scale
    if guidance is not None:
        if isinstance(guidance, (bool, np.bool_)) or not isinstance(
            guidance, (int, float, np.integer, np.floating)
        ):
            raise DifforgeError(f"guidance must be a number, got {guidance!r}")
        guidance = float(guidance)
        if not math.isfinite(guidance):
            raise DifforgeError(f"--guidance must be a finite number, got {guidance}")
    seed = _integer(req.seed, "seed")
    if seed < 0:  # numpy's generators take non-negative seeds only
        raise DifforgeError(f"--seed must be 0 or more, got {seed}")
    if seed > MAX_SEED:
        raise DifforgeError(f"--seed must be at most 2^64 - 1, got {seed}")
    sizes = {k: getattr(req, k) for k in ("steps", "height", "width")}
    sizes = {k: None if v is None else _integer(v, k) for k, v in sizes.items()}
    scheduler = None if req.scheduler is None else _text(req.scheduler, "scheduler")
    return replace(
        req,
        prompt=prompt,
        negative_prompt=_text(req.negative_prompt, "negative prompt"),
        class_label=label,
        guidance_scale=guidance,
        seed=seed,
        scheduler=scheduler,
        latents=None if req.latents is None else _latents(req.latents),
        **sizes,
    )
