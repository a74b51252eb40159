"""The lcm, tcd, dpm++2m, unipc and rectified-flow samplers (and euler's 'trailing' spacing)
against diffusers' schedulers, step for step on the same random model outputs; ancestral
noise is made equal by feeding diffusers the numbers the runtime's generator draws."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from difforge.artifact.schedulers import SCHEDULERS, create_scheduler
from difforge.artifact.schedulers.tcd import TCD
from difforge.errors import DifforgeError

SD_BETAS = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}
LCM = {
    **SD_BETAS,
    "_class_name": "LCMScheduler",
    "original_inference_steps": 50,
    "timestep_scaling": 10.0,
    "set_alpha_to_one": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "prediction_type": "epsilon",
    "clip_sample": False,
}
DPM = {**SD_BETAS, "_class_name": "DPMSolverMultistepScheduler", "steps_offset": 1}
UNIPC: dict[str, Any] = {"_class_name": "UniPCMultistepScheduler"}  # its defaults
TURBO = {**SD_BETAS, "timestep_spacing": "trailing", "steps_offset": 1}

FEW = [1, 2, 4, 8]
MANY = [1, 2, 4, 8, 10, 25]


def _diffusers(config: dict[str, Any], cls_name: str | None = None) -> Any:
    import diffusers

    cls = getattr(diffusers, cls_name or config["_class_name"])
    return cls.from_config({k: v for k, v in config.items() if k != "_class_name"})


def _close(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    """Within 1e-5 of the reference, relative to each element or to the sample's scale (ᾱ is
    computed in numpy, not torch, and differs from diffusers' in the last float32 bit)."""
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5 * scale, err_msg=what)


def _mirror_noise(monkeypatch: pytest.MonkeyPatch, module: str, seed: int) -> None:
    """diffusers' ``randn_tensor`` in ``module`` draws what a numpy generator seeded ``seed``
    draws, in the same order."""
    import importlib

    mod = importlib.import_module(f"diffusers.schedulers.{module}")
    mirror = np.random.default_rng(seed)
    monkeypatch.setattr(
        mod,
        "randn_tensor",
        lambda shape, **kw: torch.from_numpy(mirror.standard_normal(shape, dtype=np.float32)),
    )


def _compare(
    name: str,
    config: dict[str, Any],
    steps: int,
    cls_name: str | None = None,
    noise_seed: int | None = None,
    step_kwargs: dict[str, Any] | None = None,
) -> None:
    """Timesteps, input scaling, initial sigma and every step's sample equal diffusers'."""
    ours = create_scheduler(name, config, steps)
    theirs = _diffusers(config, cls_name)
    theirs.set_timesteps(steps)
    # difforge indexes by step; diffusers finds the first step by timestep value, and takes
    # the second of two equal ones (cosine + Karras repeats one): start it at step 0 instead
    theirs.set_begin_index(0)
    np.testing.assert_array_equal(ours.timesteps, theirs.timesteps.numpy().astype(np.float32))
    np.testing.assert_allclose(ours.init_noise_sigma, float(theirs.init_noise_sigma), rtol=1e-6)
    rng = np.random.default_rng(steps)
    noise_rng = None if noise_seed is None else np.random.default_rng(noise_seed)
    x = (rng.standard_normal((2, 4, 8, 8), dtype=np.float32) * ours.init_noise_sigma).astype(
        np.float32
    )
    x_t = torch.from_numpy(x.copy())
    for i, t in enumerate(theirs.timesteps):
        _close(ours.scale_model_input(x, i), theirs.scale_model_input(x_t, t).numpy(), "input")
        out = rng.standard_normal(x.shape, dtype=np.float32)
        x = ours.step(out, i, x, noise_rng)
        x_t = theirs.step(torch.from_numpy(out), t, x_t, **(step_kwargs or {})).prev_sample
        _close(x, x_t.numpy(), f"{name} {steps} steps: step {i}")
    assert np.isfinite(x).all()


# ---- lcm ---------------------------------------------------------------------------------

LCM_CASES = [
    LCM,
    {**LCM, "prediction_type": "v_prediction"},
    {**LCM, "prediction_type": "sample", "clip_sample": True, "clip_sample_range": 1.5},
    {**LCM, "original_inference_steps": 20, "timestep_scaling": 1.0},
    {**LCM, "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02},
    {"_class_name": "LCMScheduler"},  # diffusers' defaults, not DDPM's
]


@pytest.mark.parametrize("config", LCM_CASES)
@pytest.mark.parametrize("steps", FEW)
def test_lcm_matches_diffusers(
    monkeypatch: pytest.MonkeyPatch, config: dict[str, Any], steps: int
) -> None:
    _mirror_noise(monkeypatch, "scheduling_lcm", 11)
    _compare("lcm", config, steps, noise_seed=11)


def test_lcm_runs_every_origin_step_and_no_more(monkeypatch: pytest.MonkeyPatch) -> None:
    _mirror_noise(monkeypatch, "scheduling_lcm", 3)
    _compare("lcm", LCM, 50, noise_seed=3)
    with pytest.raises(DifforgeError, match=r"--steps 51 exceeds the 50 steps lcm .* at most 50"):
        create_scheduler("lcm", LCM, 51)
    with pytest.raises(ValueError):  # diffusers refuses it too
        _diffusers(LCM).set_timesteps(51)


def test_lcm_last_step_draws_no_noise() -> None:
    sched = create_scheduler("lcm", LCM, 1)
    out = np.ones((1, 4, 2, 2), np.float32)
    assert np.isfinite(sched.step(out, 0, out, None)).all()  # no generator needed
    sched = create_scheduler("lcm", LCM, 2)
    with pytest.raises(DifforgeError, match="seeded noise generator"):
        sched.step(out, 0, out, None)


# ---- tcd ---------------------------------------------------------------------------------

TCD_CASES = [
    {**LCM, "_class_name": "TCDScheduler"},
    {**LCM, "_class_name": "TCDScheduler", "gamma": 0.0},
    {**LCM, "_class_name": "TCDScheduler", "gamma": 0.5, "prediction_type": "v_prediction"},
    {**LCM, "_class_name": "TCDScheduler", "gamma": 1.0, "prediction_type": "sample"},
    {"_class_name": "TCDScheduler", "gamma": 0.7},
]


@pytest.mark.parametrize("config", TCD_CASES)
@pytest.mark.parametrize("steps", FEW)
def test_tcd_matches_diffusers(
    monkeypatch: pytest.MonkeyPatch, config: dict[str, Any], steps: int
) -> None:
    _mirror_noise(monkeypatch, "scheduling_tcd", 5)
    eta = config.get("gamma", 0.3)  # diffusers takes gamma as step()'s eta; 0.3 its default
    _compare("tcd", config, steps, noise_seed=5, step_kwargs={"eta": eta})


@pytest.mark.parametrize("gamma", [0.0, 0.1, 0.2, 0.3, 0.35, 0.5, 0.7, 0.9, 1.0])
def test_tcd_intermediate_timestep_floors_as_diffusers(gamma: float) -> None:
    sched = TCD({**LCM, "gamma": gamma, "original_inference_steps": 1000}, 1000)
    for i in range(len(sched.timesteps)):
        t_prev, s = sched.intermediate(i)
        ref = torch.floor((1 - gamma) * torch.tensor(t_prev)).to(dtype=torch.long)
        assert s == int(ref), (gamma, t_prev)


# ---- dpm++2m -----------------------------------------------------------------------------

DPM_CASES = [
    DPM,
    {**DPM, "use_karras_sigmas": True},
    {**DPM, "prediction_type": "v_prediction", "timestep_spacing": "trailing"},
    {**DPM, "prediction_type": "v_prediction", "use_karras_sigmas": True},
    {**DPM, "timestep_spacing": "leading"},
    {**DPM, "prediction_type": "sample", "solver_type": "heun"},
    {**DPM, "lower_order_final": False, "final_sigmas_type": "sigma_min"},
    {**DPM, "euler_at_final": True, "final_sigmas_type": "sigma_min"},
    {**DPM, "solver_type": "bh2"},  # UniPC's solver type: read as midpoint
    {
        "_class_name": "DPMSolverMultistepScheduler",
        "beta_schedule": "squaredcos_cap_v2",
        "lambda_min_clipped": -5.1,
        "use_karras_sigmas": True,
    },
    {
        "_class_name": "DPMSolverMultistepScheduler",
        "beta_schedule": "squaredcos_cap_v2",
        "lambda_min_clipped": -5.1,
        "timestep_spacing": "trailing",
    },
]


@pytest.mark.parametrize("config", DPM_CASES)
@pytest.mark.parametrize("steps", MANY)
def test_dpmpp_2m_matches_diffusers(config: dict[str, Any], steps: int) -> None:
    _compare("dpm++2m", config, steps)


def test_dpmpp_2m_karras_honours_sigma_bounds() -> None:
    _compare("dpm++2m", {**DPM, "use_karras_sigmas": True, "sigma_min": 0.1}, 8)


# ---- unipc -------------------------------------------------------------------------------

UNIPC_CASES = [
    UNIPC,
    {**UNIPC, **SD_BETAS},
    {**UNIPC, **SD_BETAS, "use_karras_sigmas": True},
    {**UNIPC, **SD_BETAS, "prediction_type": "v_prediction", "timestep_spacing": "trailing"},
    {
        **UNIPC,
        **SD_BETAS,
        "prediction_type": "sample",
        "timestep_spacing": "leading",
        "steps_offset": 1,
    },
    {**UNIPC, **SD_BETAS, "solver_order": 3},
    {**UNIPC, **SD_BETAS, "solver_order": 1},
    {**UNIPC, **SD_BETAS, "disable_corrector": [0, 2]},
    {**UNIPC, **SD_BETAS, "solver_type": "bh1", "final_sigmas_type": "sigma_min"},
    {**UNIPC, **SD_BETAS, "predict_x0": False, "final_sigmas_type": "sigma_min"},
    {**UNIPC, **SD_BETAS, "lower_order_final": False, "final_sigmas_type": "sigma_min"},
    {
        **UNIPC,
        **SD_BETAS,
        "use_karras_sigmas": True,
        "sigma_min": 0.05,
        "sigma_max": 10.0,
        "final_sigmas_type": "sigma_min",
    },
    {**UNIPC, **SD_BETAS, "solver_type": "midpoint"},  # read as bh2
]


@pytest.mark.parametrize("config", UNIPC_CASES)
@pytest.mark.parametrize("steps", MANY)
def test_unipc_matches_diffusers(config: dict[str, Any], steps: int) -> None:
    _compare("unipc", config, steps)


# ---- euler with 'trailing' spacing (SD-Turbo, SDXL-Turbo) --------------------------------


@pytest.mark.parametrize(
    "config",
    [TURBO, {**TURBO, "prediction_type": "v_prediction"}, {"timestep_spacing": "trailing"}],
)
@pytest.mark.parametrize("steps", [*FEW, 3, 25])
def test_euler_trailing_matches_diffusers(config: dict[str, Any], steps: int) -> None:
    _compare("euler", config, steps, cls_name="EulerDiscreteScheduler")


@pytest.mark.parametrize("config", [TURBO, {**TURBO, "prediction_type": "v_prediction"}])
@pytest.mark.parametrize("steps", [*FEW, 3])
def test_euler_ancestral_trailing_matches_diffusers(
    monkeypatch: pytest.MonkeyPatch, config: dict[str, Any], steps: int
) -> None:
    _mirror_noise(monkeypatch, "scheduling_euler_ancestral_discrete", 7)
    _compare("euler-ancestral", config, steps, "EulerAncestralDiscreteScheduler", noise_seed=7)


@pytest.mark.parametrize("name", ["euler", "euler-ancestral"])
def test_euler_reads_a_config_without_spacing_as_diffusers_does(name: str) -> None:
    cls = {"euler": "EulerDiscreteScheduler", "euler-ancestral": "EulerAncestralDiscreteScheduler"}
    ours = create_scheduler(name, dict(SD_BETAS), 10)
    theirs = _diffusers(SD_BETAS, cls[name])
    theirs.set_timesteps(10)
    np.testing.assert_allclose(ours.timesteps, theirs.timesteps.numpy(), rtol=1e-6)  # linspace


# ---- rectified-flow (InstaFlow) ----------------------------------------------------------


def _velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A made-up model whose output depends on both the sample and the timestep."""
    return torch.tanh(x) * (t[:, None, None, None] / 1000.0) - 0.3 * x


def _instaflow(z: torch.Tensor, steps: int, fed: list[float]) -> torch.Tensor:
    """InstaFlow's sampling loop (``code/pipeline_rf.py``), transcribed."""
    timesteps = [(1.0 - i / steps) * 1000.0 for i in range(steps)]
    dt = 1.0 / steps
    latents = z
    for t in timesteps:
        vec_t = torch.ones((latents.shape[0],)) * t
        fed.append(float(vec_t[0]))
        latents = latents + dt * _velocity(latents, vec_t)
    return latents


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_rectified_flow_matches_instaflow(steps: int) -> None:
    sched = create_scheduler("rectified-flow", dict(LCM), steps)
    z = np.random.default_rng(steps).standard_normal((2, 4, 8, 8), dtype=np.float32)
    fed: list[float] = []
    ref = _instaflow(torch.from_numpy(z.copy()), steps, fed).numpy()
    np.testing.assert_array_equal(sched.timesteps, np.asarray(fed, np.float32))
    x = z * np.float32(sched.init_noise_sigma)
    for i, t in enumerate(sched.timesteps):
        model_in = sched.scale_model_input(x, i)
        v = _velocity(torch.from_numpy(model_in), torch.full((x.shape[0],), float(t))).numpy()
        x = sched.step(v, i, x)
    _close(x, ref, f"rectified-flow {steps} steps")
    if steps == 1:  # x₁ = z + v(z, t=1000)
        one = z + _velocity(torch.from_numpy(z), torch.full((2,), 1000.0)).numpy()
        _close(x, one, "one step")


# ---- refusals ----------------------------------------------------------------------------

REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("lcm", {**LCM, "thresholding": True}, "thresholding=True"),
    ("lcm", {**LCM, "prediction_type": "flow_prediction"}, "prediction_type='flow_prediction'"),
    ("lcm", {**LCM, "original_inference_steps": 0}, "original_inference_steps=0"),
    ("lcm", {**LCM, "timestep_scaling": None}, "timestep_scaling=None"),
    ("tcd", {**LCM, "gamma": 1.5}, "gamma=1.5"),
    ("tcd", {**LCM, "rescale_betas_zero_snr": True}, "rescale_betas_zero_snr=True"),
    ("dpm++2m", {**DPM, "algorithm_type": "sde-dpmsolver++"}, "algorithm_type='sde-dpmsolver++'"),
    ("dpm++2m", {**DPM, "solver_order": 3}, "solver_order=3"),
    ("dpm++2m", {**DPM, "use_lu_lambdas": True}, "use_lu_lambdas=True"),
    ("dpm++2m", {**DPM, "lower_order_final": "yes"}, "lower_order_final='yes'"),
    ("dpm++2m", {**DPM, "lambda_min_clipped": math.nan}, "lambda_min_clipped=nan"),
    ("unipc", {**UNIPC, "use_flow_sigmas": True}, "use_flow_sigmas=True"),
    ("unipc", {**UNIPC, "solver_type": "bh1"}, "solver_type='bh1' with final_sigmas_type"),
    ("unipc", {**UNIPC, "predict_x0": False}, "predict_x0=False with final_sigmas_type"),
    ("unipc", {**UNIPC, "disable_corrector": "0"}, "disable_corrector='0'"),
    ("unipc", {**UNIPC, "solver_order": 4}, "solver_order=4"),
    ("euler", {**TURBO, "final_sigmas_type": "sigma_min"}, "final_sigmas_type='sigma_min'"),
    ("euler-ancestral", {**TURBO, "prediction_type": "sample"}, "prediction_type='sample'"),
    ("rectified-flow", {}, "--steps must be at least 1"),
]


@pytest.mark.parametrize(("name", "config", "key"), REFUSALS)
def test_bad_config_is_refused_in_one_line(name: str, config: dict[str, Any], key: str) -> None:
    steps = 0 if name == "rectified-flow" else 4
    with pytest.raises(DifforgeError) as err:
        create_scheduler(name, config, steps)
    assert key in str(err.value) and "\n" not in str(err.value)


def test_every_sampler_has_a_refusal_case() -> None:
    assert {name for name, _, _ in REFUSALS} >= set(SCHEDULERS) - {"ddim", "flow-euler"}


@pytest.mark.parametrize("name", ["dpm++2m", "unipc"])
def test_multistep_samplers_step_in_order(name: str) -> None:
    sched = create_scheduler(name, DPM, 5)
    x = np.ones((1, 4, 2, 2), np.float32)
    sched.step(x, 0, x)
    with pytest.raises(DifforgeError, match="step 1 is next, not 2"):
        sched.step(x, 2, x)
