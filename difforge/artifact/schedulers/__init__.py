"""numpy samplers, looked up by name or from a diffusers scheduler class name.

They live in the artifact layer, beside the step tables, because the compiler and the runtime
must agree on them exactly: export checks that the runtime can sample a model's scheduler
config (and records which sampler it gets), the runtime samples with it.
"""

from __future__ import annotations

from typing import Any

from difforge.artifact.schedulers.base import Scheduler
from difforge.artifact.schedulers.ddim import DDIM
from difforge.artifact.schedulers.euler import Euler, EulerAncestral
from difforge.artifact.schedulers.flow_euler import FlowMatchEuler
from difforge.errors import DifforgeError

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

#: diffusers classes sampled by another runtime sampler with the same noise schedule and the
#: same model parameterisation: a different solver of the same ODE, not a different model.
SUBSTITUTES = {"PNDMScheduler": "ddim", "DDPMScheduler": "ddim"}

#: diffusers classes whose models need their own sampler (consistency-distilled students):
#: any other sampler gives wrong images.
OWN_SAMPLER = ("LCMScheduler", "TCDScheduler")


def choose_sampler(
    class_name: str, config: dict[str, Any], requested: str | None = None
) -> tuple[str, dict[str, Any], str | None]:
    """The runtime sampler for a diffusers scheduler config: (name, config to record, note).

    The class's own sampler when the runtime has it; a sound substitute (same noise schedule,
    said in the note); the sampler the user ``requested`` (of the config's family); otherwise
    an error naming what is supported.
    """
    own = DIFFUSERS_NAMES.get(class_name)
    family = "flow" if class_name.startswith("FlowMatch") else "vp"
    if requested is not None:
        if requested not in SCHEDULERS:
            known = ", ".join(sorted(SCHEDULERS))
            raise DifforgeError(f"unknown scheduler '{requested}' (known: {known})")
        if FAMILY[requested] != family:
            raise DifforgeError(
                f"--scheduler {requested} does not fit {class_name or 'this scheduler'}, a "
                f"{'flow-matching' if family == 'flow' else 'noise-prediction'} schedule"
            )
        if requested == own:
            return own, config, None
        note = f"{class_name} sampled with {requested}, as asked (--scheduler)"
        return requested, _relabel(config, requested), note
    if own is not None:
        return own, config, None
    if class_name in SUBSTITUTES:
        name = SUBSTITUTES[class_name]
        note = f"{class_name} sampled with {name}: the same noise schedule, another solver"
        return name, _relabel(config, name), note
    supported = ", ".join(sorted(DIFFUSERS_NAMES))
    why = (
        " (a consistency-distilled model: another sampler gives wrong images)"
        if class_name in OWN_SAMPLER
        else ""
    )
    raise DifforgeError(
        f"scheduler {class_name or '(no _class_name)'} is not one the runtime implements"
        f"{why}; supported: {supported} (PNDM and DDPM are sampled with ddim); "
        f"--scheduler {'|'.join(sorted(SCHEDULERS))} samples with one of these instead"
    )


def _relabel(config: dict[str, Any], name: str) -> dict[str, Any]:
    """The config under the diffusers class of the runtime sampler that will read it."""
    cls = next(k for k, v in DIFFUSERS_NAMES.items() if v == name)
    return {**config, "_class_name": cls}


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


__all__ = [
    "DIFFUSERS_NAMES",
    "FAMILY",
    "SCHEDULERS",
    "SUBSTITUTES",
    "Scheduler",
    "choose_sampler",
    "create_scheduler",
]
