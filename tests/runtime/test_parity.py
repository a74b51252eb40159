"""The torch-free runtime against the diffusers pipelines on the same weights and latents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from difforge.runtime import GenerateRequest, load
from difforge.sources.presets import tiny_dit, tiny_sd

pytestmark = pytest.mark.slow


def _sd_pipeline(scheduler: str) -> object:
    import diffusers

    from tests.reference_pipelines import sd_pipeline

    cls = {"ddim": diffusers.DDIMScheduler, "euler": diffusers.EulerDiscreteScheduler}[scheduler]
    return sd_pipeline(tiny_sd(0), cls)


@pytest.mark.parametrize(("scheduler", "steps", "size"), [("ddim", 10, 256), ("euler", 6, 192)])
def test_text_to_image_matches_diffusers(
    tiny_sd_artifact: Path, scheduler: str, steps: int, size: int
) -> None:
    pipe = load(tiny_sd_artifact)
    latents = np.random.default_rng(3).standard_normal(
        (1, 4, size // 8, size // 8), dtype=np.float32
    )
    prompt = "a photo of a cat on a red chair"
    ours = pipe(
        GenerateRequest(
            prompt=prompt,
            steps=steps,
            guidance_scale=7.5,
            height=size,
            width=size,
            scheduler=scheduler,
            latents=latents,
        )
    ).images[0]
    ref_pipe = _sd_pipeline(scheduler)
    with torch.no_grad():
        ref = ref_pipe(
            prompt,
            num_inference_steps=steps,
            guidance_scale=7.5,
            height=size,  # type: ignore[operator]
            width=size,
            latents=torch.from_numpy(latents),
            output_type="np",
        ).images[0]
    ref_u8 = (ref * 255).round().astype(np.uint8)
    diff = np.abs(ours.astype(int) - ref_u8.astype(int)).max()
    assert ours.shape == ref_u8.shape
    assert diff <= 2, f"max pixel difference {diff}/255"
    # Not vacuous: the image is not flat, and another seed gives another image.
    assert ours.std() > 5
    other = pipe(
        GenerateRequest(
            prompt=prompt, steps=steps, height=size, width=size, scheduler=scheduler, seed=11
        )
    ).images[0]
    assert np.abs(other.astype(int) - ours.astype(int)).max() > 10


def test_class_to_image_matches_diffusers(
    tiny_dit_artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import diffusers
    import diffusers.pipelines.dit.pipeline_dit as dit_mod

    pipe = load(tiny_dit_artifact)
    latents = np.random.default_rng(4).standard_normal((1, 4, 16, 16), dtype=np.float32)
    ours = pipe(
        GenerateRequest(class_label=7, steps=8, guidance_scale=4.0, latents=latents)
    ).images[0]
    src = tiny_dit(0)
    sched = diffusers.DDIMScheduler.from_config(
        {k: v for k, v in src.scheduler_config.items() if k != "_class_name"}
    )
    ref_pipe = diffusers.DiTPipeline(transformer=src.denoiser, vae=src.vae, scheduler=sched)
    monkeypatch.setattr(dit_mod, "randn_tensor", lambda *a, **k: torch.from_numpy(latents))
    with torch.no_grad():
        ref = ref_pipe(
            class_labels=[7], guidance_scale=4.0, num_inference_steps=8, output_type="np"
        ).images[0]
    ref_u8 = (ref * 255).round().astype(np.uint8)
    diff = np.abs(ours.astype(int) - ref_u8.astype(int)).max()
    assert diff <= 2, f"max pixel difference {diff}/255"
    assert ours.std() > 1


def test_flux_matches_diffusers(tmp_path: Path) -> None:
    from difforge import CompileConfig, ExportConfig, ResolutionRange, compile
    from difforge.artifact.step_plan import StepPlan
    from tests.reference_pipelines import patched_reference

    cfg = ExportConfig(
        output=tmp_path / "flux",
        preset="tiny-flux",
        max_batch=1,
        resolution=ResolutionRange(128, 192, 256),
    )
    pipe = load(compile(CompileConfig(export=cfg)))
    latents = np.random.default_rng(2).standard_normal((1, 4, 24, 24), dtype=np.float32)
    ours = pipe(
        GenerateRequest(prompt="a red boat", steps=5, height=192, width=192, latents=latents)
    ).images[0]
    ref = patched_reference("tiny-flux", [], latents, 5, 0, StepPlan(), "a red boat", 0)
    diff = np.abs(ours.astype(int) - ref.astype(int)).max()
    assert diff <= 2, f"max pixel difference {diff}/255"
    assert ours.std() > 1
