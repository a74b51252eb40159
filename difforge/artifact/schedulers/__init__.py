"""numpy samplers, looked up by name or from a diffusers scheduler class name.

They live in the artifact layer, beside the step tables, because the compiler and the runtime
must agree on them exactly: export checks that the runtime can sample a model's scheduler
config (and records which sampler it gets), the runtime samples with it.
"""

from __future__ import annotations

from typing import Any

from difforge.artifact.schedulers.base import Scheduler
from difforge.artifact.schedulers.ddim import DDIM
from difforge.artifact.schedulers.dpm import DPMSolverPP2M
from difforge.artifact.schedulers.euler import Euler, EulerAncestral
from difforge.artifact.schedulers.flow_euler import FlowMatchEuler
from difforge.artifact.schedulers.lcm import LCM
from difforge.artifact.schedulers.rectified_flow import RectifiedFlow
from difforge.artifact.schedulers.tcd import TCD
from difforge.artifact.schedulers.unipc import UniPC
from difforge.errors import DifforgeError

SCHEDULERS: dict[str, type[Scheduler]] = {
    cls.name: cls
    for cls in (
        DDIM,
        Euler,
        EulerAncestral,
        DPMSolverPP2M,
        UniPC,
        FlowMatchEuler,
        LCM,
        TCD,
        RectifiedFlow,
    )
}

#: diffusers class names that map onto a difforge sampler with the same config.
#: (rectified-flow has no diffusers class: InstaFlow's pipeline samples it by hand.)
DIFFUSERS_NAMES = {
    "DDIMScheduler": "ddim",
    "EulerDiscreteScheduler": "euler",
    "EulerAncestralDiscreteScheduler": "euler-ancestral",
    "DPMSolverMultistepScheduler": "dpm++2m",
    "UniPCMultistepScheduler": "unipc",
    "FlowMatchEulerDiscreteScheduler": "flow-euler",
    "LCMScheduler": "lcm",
    "TCDScheduler": "tcd",
}

#: Samplers that share a noise schedule family can be swapped at run time. Each consistency
#: sampler is a family of its own: a consistency-distilled model is sampled only by the
#: sampler it was distilled for, and no other sampler samples it.
FAMILY = {
    "ddim": "vp",
    "euler": "vp",
    "euler-ancestral": "vp",
    "dpm++2m": "vp",
    "unipc": "vp",
    "flow-euler": "flow",
    "lcm": "lcm",
    "tcd": "tcd",
    "rectified-flow": "rectified-flow",
}

#: How an error names each family's schedules.
FAMILY_WORDS = {
    "vp": "noise-prediction",
    "flow": "flow-matching",
    "lcm": "latent-consistency",
    "tcd": "trajectory-consistency",
    "rectified-flow": "rectified-flow",
}

#: diffusers classes sampled by another runtime sampler with the same noise schedule and the
#: same model parameterisation: a different solver of the same ODE, not a different model.
SUBSTITUTES = {"PNDMScheduler": "ddim", "DDPMScheduler": "ddim"}

#: diffusers classes whose models need their own sampler (consistency-distilled students):
#: any other sampler gives wrong images, so --scheduler cannot swap theirs.
OWN_SAMPLER = ("LCMScheduler", "TCDScheduler")
CONSISTENCY_NOTE = "a consistency-distilled model: another sampler gives wrong images"


def _family(class_name: str) -> str:
    """The noise-schedule family of a diffusers scheduler class."""
    own = DIFFUSERS_NAMES.get(class_name) or SUBSTITUTES.get(class_name)
    if own is not None:
        return FAMILY[own]
    return "flow" if class_name.startswith("FlowMatch") else "vp"


def choose_sampler(
    class_name: str, config: dict[str, Any], requested: str | None = None
) -> tuple[str, dict[str, Any], str | None]:
    """The runtime sampler for a diffusers scheduler config: (name, config to record, note).

    The class's own sampler when the runtime has it; a sound substitute (same noise schedule,
    said in the note); the sampler the user ``requested`` (of the config's family); otherwise
    an error naming what is supported. A consistency-distilled model's sampler is never
    swapped.
    """
    own = DIFFUSERS_NAMES.get(class_name)
    family = _family(class_name)
    if requested is not None:
        if requested not in SCHEDULERS:
            known = ", ".join(sorted(SCHEDULERS))
            raise DifforgeError(f"unknown scheduler '{requested}' (known: {known})")
        if requested == own:
            return own, config, None
        if class_name in OWN_SAMPLER:
            raise DifforgeError(
                f"--scheduler {requested} does not fit {class_name} ({CONSISTENCY_NOTE}); "
                f"it is sampled with {own or 'its own sampler'}"
            )
        if FAMILY[requested] != family:
            raise DifforgeError(
                f"--scheduler {requested} does not fit {class_name or 'this scheduler'}, a "
                f"{FAMILY_WORDS[family]} schedule"
            )
        note = f"{class_name} sampled with {requested}, as asked (--scheduler)"
        return requested, _relabel(config, requested), note
    if own is not None:
        return own, config, None
    if class_name in SUBSTITUTES:
        name = SUBSTITUTES[class_name]
        note = f"{class_name} sampled with {name}: the same noise schedule, another solver"
        return name, _relabel(config, name), note
    supported = ", ".join(sorted(DIFFUSERS_NAMES))
    why = f" ({CONSISTENCY_NOTE})" if class_name in OWN_SAMPLER else ""
    fitting = sorted(name for name, fam in FAMILY.items() if fam == family)
    raise DifforgeError(
        f"scheduler {class_name or '(no _class_name)'} is not one the runtime implements"
        f"{why}; supported: {supported} (PNDM and DDPM are sampled with ddim); "
        f"--scheduler {'|'.join(fitting)} samples with one of these instead"
    )


def _relabel(config: dict[str, Any], name: str) -> dict[str, Any]:
    """The config under the diffusers class of the runtime sampler that will read it (read
    with that class's defaults, as diffusers' ``from_config`` would)."""
    cls = next((k for k, v in DIFFUSERS_NAMES.items() if v == name), None)
    return config if cls is None else {**config, "_class_name": cls}


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
    "OWN_SAMPLER",
    "SCHEDULERS",
    "SUBSTITUTES",
    "Scheduler",
    "choose_sampler",
    "create_scheduler",
]
