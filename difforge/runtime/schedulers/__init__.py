"""numpy samplers, looked up by name or from a diffusers scheduler class name."""

from __future__ import annotations

from typing import Any

from difforge.errors import DifforgeError
from difforge.runtime.schedulers.base import Scheduler
from difforge.runtime.schedulers.ddim import DDIM
from difforge.runtime.schedulers.euler import Euler, EulerAncestral
from difforge.runtime.schedulers.flow_euler import FlowMatchEuler

SCHEDULERS: dict[str, type[Scheduler]] = {
    cls.name: cls for cls in (DDIM, Euler, EulerAncestral, FlowMatchEuler)
}

#: diffusers class names that map onto a difforge sampler with the same config.
DIFFUSERS_NAMES = {
    "DDIMScheduler": "ddim",
    "EulerDiscreteScheduler": "euler",
    "EulerAncestralDiscreteScheduler": "euler-ancestral",
    "FlowMatchEulerDiscreteScheduler": "flow-euler",
}

#: Samplers that share a noise schedule family can be swapped at run time.
FAMILY = {"ddim": "vp", "euler": "vp", "euler-ancestral": "vp", "flow-euler": "flow"}


def packed_seq_len(height: int, width: int, vae_scale_factor: int) -> int:
    """The image tokens dynamically shifted flow sampling counts: FLUX packs 2x2 latents."""
    factor = vae_scale_factor * 2
    return (height // factor) * (width // factor)


def create_scheduler(
    name: str, config: dict[str, Any], num_steps: int, image_seq_len: int | None = None
) -> Scheduler:
    """``image_seq_len`` (latent tokens) matters only to dynamically shifted flow sampling."""
    try:
        cls = SCHEDULERS[name]
    except KeyError:
        known = ", ".join(sorted(SCHEDULERS))
        raise DifforgeError(f"unknown scheduler '{name}' (known: {known})") from None
    if cls is FlowMatchEuler:
        return FlowMatchEuler(config, num_steps, image_seq_len)
    return cls(config, num_steps)


__all__ = ["DIFFUSERS_NAMES", "FAMILY", "SCHEDULERS", "Scheduler", "create_scheduler"]
