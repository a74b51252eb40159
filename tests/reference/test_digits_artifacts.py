"""Compiled digits reference models: the engine reproduces the PyTorch samples, and eval says so.

The PyTorch side here is the training-time sampler (``difforge.reference.flow.sample``),
written apart from the runtime's loop, fed the runtime's own initial noise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from difforge.evaluation.fidelity import psnr
from difforge.reference.folders import CLEAR_WEIGHTS, MODELS_DIR, load_denoiser
from tests.digits_artifacts import compile_digits, shared_digits_artifact

MIN_PSNR = 40.0


@pytest.fixture(scope="session")
def digits_unet_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_digits_artifact(tmp_path_factory, "digits-unet")


@pytest.fixture(scope="session")
def digits_student_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_digits_artifact(tmp_path_factory, "digits-unet-4step")


def _runtime_vs_torch(artifact: Path, model: torch.nn.Module, steps: int, guidance: float) -> None:
    from difforge.reference.flow import sample
    from difforge.runtime import GenerateRequest, load

    pipe = load(artifact)
    labels = [3, 7, 0, 9]
    noise = np.random.default_rng(11).standard_normal((4, 1, 32, 32), dtype=np.float32)
    result = pipe(
        GenerateRequest(class_label=labels, steps=steps, guidance_scale=guidance, latents=noise)
    )
    ref = sample(
        model, torch.tensor(labels), steps, guidance, seed=0, noise=torch.from_numpy(noise)
    )
    ref_u8 = ((ref.numpy().transpose(0, 2, 3, 1) / 2 + 0.5).clip(0, 1) * 255).round()
    for ours, theirs in zip(result.images, ref_u8.astype(np.uint8), strict=True):
        assert psnr(ours, theirs) >= MIN_PSNR


def test_teacher_artifact_reproduces_pytorch_samples(digits_unet_artifact: Path) -> None:
    manifest = json.loads((digits_unet_artifact / "manifest.json").read_text())
    assert manifest["pipeline"]["pixel_space"] is True
    assert set(manifest["components"]) == {"denoiser"}
    _runtime_vs_torch(digits_unet_artifact, load_denoiser(MODELS_DIR / "digits-unet"), 50, 1.0)
    # With classifier-free guidance too (two passes per step, [cond, null]).
    _runtime_vs_torch(digits_unet_artifact, load_denoiser(MODELS_DIR / "digits-unet"), 8, 1.5)


def test_student_artifact_takes_guidance_as_input(digits_student_artifact: Path) -> None:
    manifest = json.loads((digits_student_artifact / "manifest.json").read_text())
    inputs = [t["name"] for t in manifest["components"]["denoiser"]["inputs"]]
    assert inputs == ["sample", "timestep", "class_labels", "guidance"]
    model = load_denoiser(MODELS_DIR / "digits-unet-4step")
    _runtime_vs_torch(digits_student_artifact, model, 4, 1.5)


def test_eval_reports_fidelity_and_digit_quality(digits_unet_artifact: Path) -> None:
    from difforge import api
    from difforge.reference.folders import read_card

    report = api.evaluate(digits_unet_artifact, images=3, quality_samples=100, steps=50)
    assert len(report.images) == 3
    assert report.worst_psnr >= MIN_PSNR and report.worst_ssim > 0.99
    assert report.quality is not None and report.quality["samples"] == 100
    assert report.quality["fd_reliable"] is False
    card = read_card(MODELS_DIR / "digits-unet")
    assert report.quality["accuracy"] >= card["metrics"]["accuracy"] - 0.1


def test_eval_cli_json_and_psnr_gate(digits_student_artifact: Path) -> None:
    from difforge.cli import cli

    args = ["eval", str(digits_student_artifact), "--images", "2", "--quality-samples", "0"]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["steps"] == 4 and len(data["fidelity"]["images"]) == 2
    gated = CliRunner().invoke(cli, [*args, "-q", "--min-psnr", "1000"])
    assert gated.exit_code == 1
    assert "below --min-psnr" in gated.output


def test_run_writes_a_class_grid(digits_student_artifact: Path, tmp_path: Path) -> None:
    from PIL import Image

    from difforge.cli import cli

    out = tmp_path / "grid.png"
    result = CliRunner().invoke(
        cli, ["run", str(digits_student_artifact), "--classes", "0-9", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    with Image.open(out) as img:
        assert img.size == (10 * 32 + 9 * 2, 32) and img.mode == "L"  # 2-px gaps
    bad = CliRunner().invoke(cli, ["run", str(digits_student_artifact), "--classes", "9-0"])
    assert bad.exit_code == 2 and "--classes takes" in bad.output


def test_clear_distilled_dit_compiles_and_matches_pytorch(tmp_path: Path) -> None:
    from difforge import api

    weights = MODELS_DIR / "digits-dit-clear" / CLEAR_WEIGHTS
    artifact = compile_digits(tmp_path / "a", "digits-dit", [f"clear:radius=4,weights={weights}"])
    report = api.evaluate(artifact, images=2, quality_samples=0, steps=10)
    assert report.worst_psnr >= MIN_PSNR


def test_stage_timings_add_up_without_a_vae(digits_unet_artifact: Path) -> None:
    from difforge.runtime import GenerateRequest, load

    result = load(digits_unet_artifact)(GenerateRequest(class_label=[1, 2], steps=3))
    timings = dict(result.timings)
    total = timings.pop("total")
    assert timings["vae_decoder"] == 0.0
    assert set(timings) == {"conditioning", "denoiser", "scheduler_and_host", "vae_decoder"}
    assert sum(timings.values()) == pytest.approx(total, rel=1e-9)
