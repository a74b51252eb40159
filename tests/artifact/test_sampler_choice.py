"""Which runtime sampler a diffusers scheduler class gets, and which swaps --scheduler may
make: the vp solvers swap freely; a consistency-distilled model keeps its own sampler."""

from __future__ import annotations

import pytest

from difforge.artifact.schedulers import FAMILY, choose_sampler, create_scheduler
from difforge.errors import DifforgeError
from tests.artifact.test_samplers_more import LCM, SD_BETAS, _compare


@pytest.mark.parametrize(
    ("cls", "name"),
    [
        ("LCMScheduler", "lcm"),
        ("TCDScheduler", "tcd"),
        ("DPMSolverMultistepScheduler", "dpm++2m"),
        ("UniPCMultistepScheduler", "unipc"),
    ],
)
def test_new_classes_get_their_own_sampler(cls: str, name: str) -> None:
    config = {**LCM, "_class_name": cls}
    assert choose_sampler(cls, config) == (name, config, None)
    create_scheduler(name, config, 4)  # and the sampler reads that config


@pytest.mark.parametrize("cls", ["LCMScheduler", "TCDScheduler"])
@pytest.mark.parametrize("requested", ["ddim", "euler", "dpm++2m", "lcm", "tcd", "flow-euler"])
def test_consistency_models_keep_their_sampler(cls: str, requested: str) -> None:
    own = {"LCMScheduler": "lcm", "TCDScheduler": "tcd"}[cls]
    if requested == own:
        assert choose_sampler(cls, LCM, requested)[0] == own
        return
    with pytest.raises(DifforgeError) as err:
        choose_sampler(cls, LCM, requested)
    text = str(err.value)
    assert "consistency-distilled" in text and cls in text and "\n" not in text


def test_families_keep_consistency_samplers_apart() -> None:
    assert FAMILY["dpm++2m"] == FAMILY["unipc"] == FAMILY["ddim"] == "vp"
    others = [FAMILY[n] for n in ("lcm", "tcd", "rectified-flow", "flow-euler")]
    assert len(set(others)) == 4 and "vp" not in others


@pytest.mark.parametrize(
    ("cls", "requested", "reader"),
    [
        ("UniPCMultistepScheduler", "dpm++2m", "DPMSolverMultistepScheduler"),
        ("DPMSolverMultistepScheduler", "unipc", "UniPCMultistepScheduler"),
        ("DDIMScheduler", "dpm++2m", "DPMSolverMultistepScheduler"),
        ("EulerDiscreteScheduler", "unipc", "UniPCMultistepScheduler"),
    ],
)
def test_vp_samplers_swap_and_read_the_config_as_diffusers(
    cls: str, requested: str, reader: str
) -> None:
    config = {**SD_BETAS, "_class_name": cls, "solver_type": "midpoint", "steps_offset": 1}
    if cls == "UniPCMultistepScheduler":
        config["solver_type"] = "bh2"
    name, relabelled, note = choose_sampler(cls, config, requested)
    assert (name, relabelled["_class_name"]) == (requested, reader)
    assert note == f"{cls} sampled with {requested}, as asked (--scheduler)"
    _compare(requested, relabelled, 6)


def test_rectified_flow_fits_no_diffusers_schedule() -> None:
    for cls in ("DDIMScheduler", "FlowMatchEulerDiscreteScheduler", "UniPCMultistepScheduler"):
        with pytest.raises(DifforgeError, match="does not fit"):
            choose_sampler(cls, {}, "rectified-flow")
