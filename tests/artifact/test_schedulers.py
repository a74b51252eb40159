"""numpy samplers against diffusers' schedulers: same timesteps, same updates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from difforge.artifact.schedulers import create_scheduler
from difforge.errors import DifforgeError
from difforge.sources.presets import DIT_SCHEDULER, SD_SCHEDULER

FLOW = {"num_train_timesteps": 1000, "shift": 3.0}


def _diffusers(name: str, config: dict) -> object:
    import diffusers

    cls = {
        "ddim": diffusers.DDIMScheduler,
        "euler": diffusers.EulerDiscreteScheduler,
        "euler-ancestral": diffusers.EulerAncestralDiscreteScheduler,
        "flow-euler": diffusers.FlowMatchEulerDiscreteScheduler,
    }[name]
    return cls.from_config({k: v for k, v in config.items() if k != "_class_name"})


CASES = [
    ("ddim", SD_SCHEDULER),
    ("ddim", DIT_SCHEDULER),
    ("ddim", {**SD_SCHEDULER, "timestep_spacing": "trailing", "prediction_type": "v_prediction"}),
    ("euler", SD_SCHEDULER),
    ("euler", {**SD_SCHEDULER, "timestep_spacing": "linspace"}),
    ("flow-euler", FLOW),
]


@pytest.mark.parametrize(("name", "config"), CASES)
@pytest.mark.parametrize("steps", [1, 7, 20])
def test_matches_diffusers(name: str, config: dict, steps: int) -> None:
    ours = create_scheduler(name, config, steps)
    theirs = _diffusers(name, config)
    theirs.set_timesteps(steps)  # type: ignore[attr-defined]
    ref_ts = theirs.timesteps.numpy()  # type: ignore[attr-defined]
    np.testing.assert_allclose(ours.timesteps, ref_ts.astype(np.float32), rtol=1e-6, atol=1e-4)
    ref_sigma = float(getattr(theirs, "init_noise_sigma", 1.0))
    np.testing.assert_allclose(ours.init_noise_sigma, ref_sigma, rtol=1e-5)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 8, 8), dtype=np.float32)
    x_t = torch.from_numpy(x.copy())
    for i, t in enumerate(theirs.timesteps):  # type: ignore[attr-defined]
        eps = rng.standard_normal(x.shape, dtype=np.float32)
        if hasattr(theirs, "scale_model_input"):
            scaled = ours.scale_model_input(x, i)
            ref_scaled = theirs.scale_model_input(x_t, t).numpy()
            np.testing.assert_allclose(scaled, ref_scaled, rtol=1e-4, atol=1e-4)
        x = ours.step(eps, i, x)
        x_t = theirs.step(torch.from_numpy(eps), t, x_t).prev_sample  # type: ignore[attr-defined]
        np.testing.assert_allclose(x, x_t.numpy(), rtol=1e-4, atol=1e-4)


def test_euler_ancestral_matches_with_the_same_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    import diffusers.schedulers.scheduling_euler_ancestral_discrete as mod

    steps = 6
    ours = create_scheduler("euler-ancestral", SD_SCHEDULER, steps)
    theirs = _diffusers("euler-ancestral", SD_SCHEDULER)
    theirs.set_timesteps(steps)  # type: ignore[attr-defined]
    seed_rng = np.random.default_rng(5)
    noise_rng = np.random.default_rng(9)
    mirror = np.random.default_rng(9)
    monkeypatch.setattr(
        mod,
        "randn_tensor",
        lambda shape, **kw: torch.from_numpy(mirror.standard_normal(shape, dtype=np.float32)),
    )
    x = seed_rng.standard_normal((1, 4, 8, 8), dtype=np.float32)
    x_t = torch.from_numpy(x.copy())
    for i, t in enumerate(theirs.timesteps):  # type: ignore[attr-defined]
        eps = seed_rng.standard_normal(x.shape, dtype=np.float32)
        x = ours.step(eps, i, x, noise_rng)
        x_t = theirs.step(torch.from_numpy(eps), t, x_t).prev_sample  # type: ignore[attr-defined]
        np.testing.assert_allclose(x, x_t.numpy(), rtol=1e-4, atol=1e-4)


def test_unsupported_config_is_named() -> None:
    with pytest.raises(DifforgeError, match="use_karras_sigmas=True"):
        create_scheduler("euler", {**SD_SCHEDULER, "use_karras_sigmas": True}, 10)
    with pytest.raises(DifforgeError, match="unknown scheduler 'dpm'"):
        create_scheduler("dpm", SD_SCHEDULER, 10)
    with pytest.raises(DifforgeError, match="at least 1"):
        create_scheduler("ddim", SD_SCHEDULER, 0)


def test_ddim_refuses_steps_that_overshoot_the_schedule() -> None:
    # SD's steps_offset 1 with 'leading' spacing: 1000 steps would start at timestep 1000.
    assert SD_SCHEDULER["steps_offset"] == 1 and SD_SCHEDULER["timestep_spacing"] == "leading"
    with pytest.raises(DifforgeError, match=r"timestep 1000, past the last .* at most 999 steps"):
        create_scheduler("ddim", dict(SD_SCHEDULER), 1000)
    sched = create_scheduler("ddim", dict(SD_SCHEDULER), 999)
    assert sched.timesteps.max() == 999
    # Euler interpolates its sigmas (clamped at the ends), as diffusers does: no overshoot.
    create_scheduler("euler", dict(SD_SCHEDULER), 1000)
