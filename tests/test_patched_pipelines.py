"""Patched models end to end: compile, run on the torch-free runtime, and match the patched
PyTorch pipeline (same weights, latents, per-step variants and per-step inputs) within 2/255."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from difforge import CompileConfig, ExportConfig, ResolutionRange, compile
from difforge.export.patches import create_patch, parse_patch_arg
from difforge.export.sources.presets import VOCAB_DIR, load_preset
from difforge.runtime import GenerateRequest, load
from difforge.runtime.step_inputs import msw_msa_shift
from difforge.runtime.step_plan import StepPlan

pytestmark = pytest.mark.slow

CASES = [
    ("tiny-sd", "linfusion", 128),
    ("tiny-sd", "msw-msa", 128),
    ("tiny-sd", "redilate:scale=2,tau=30", 256),
    ("tiny-sd", "raunet", 256),
    ("tiny-lk-unet", "reparam", 128),
    ("tiny-dit", "clear:radius=8", 128),
]


def _compile(tmp: Path, preset: str, patch: str, size: int) -> Path:
    res = ResolutionRange() if preset == "tiny-dit" else ResolutionRange(128, size, 256)
    cfg = ExportConfig(output=tmp / "art", preset=preset, patches=[patch], resolution=res,
                       max_batch=1)
    return compile(CompileConfig(export=cfg))


def _reference(preset: str, patch: str, latents: np.ndarray, steps: int, seed: int,
               plan: StepPlan, prompt: str, label: int) -> np.ndarray:
    import diffusers

    source = load_preset(preset, 0)
    patcher = create_patch(parse_patch_arg(patch))
    patcher.apply(source.denoiser)
    config = {k: v for k, v in source.scheduler_config.items() if k != "_class_name"}
    sched = diffusers.DDIMScheduler.from_config(config)
    schedule = plan.schedule(steps)

    def set_step(i: int) -> dict[str, Any] | None:
        if hasattr(patcher, "set_variant") and i < steps:
            patcher.set_variant(schedule[i])
        if "msw_msa_shift" in plan.inputs and i < steps:
            return {"msw_msa_shift": torch.tensor([msw_msa_shift(steps, seed)[i]])}
        return None

    with torch.no_grad():
        if source.kind == "class-to-image":
            import diffusers.pipelines.dit.pipeline_dit as dit_mod

            pipe = diffusers.DiTPipeline(transformer=source.denoiser, vae=source.vae,
                                         scheduler=sched)
            original = dit_mod.randn_tensor
            dit_mod.randn_tensor = lambda *a, **k: torch.from_numpy(latents)
            try:
                out = pipe(class_labels=[label], guidance_scale=4.0, num_inference_steps=steps,
                           output_type="np").images[0]
            finally:
                dit_mod.randn_tensor = original
            return (out * 255).round().astype(np.uint8)
        from transformers import CLIPTokenizer

        tok = CLIPTokenizer(str(VOCAB_DIR / "vocab.json"), str(VOCAB_DIR / "merges.txt"),
                            model_max_length=77)
        pipe = diffusers.StableDiffusionPipeline(
            vae=source.vae, text_encoder=source.text_encoder, tokenizer=tok,
            unet=source.denoiser, scheduler=sched, safety_checker=None,
            feature_extractor=None, requires_safety_checker=False,
        )

        def on_step_end(p: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            extra = set_step(i + 1)
            if extra is not None:
                p._cross_attention_kwargs = extra
            return kwargs

        first = set_step(0)
        size = latents.shape[-1] * 8
        out = pipe(prompt, num_inference_steps=steps, guidance_scale=7.5, height=size,
                   width=size, latents=torch.from_numpy(latents), output_type="np",
                   cross_attention_kwargs=first, callback_on_step_end=on_step_end).images[0]
        return (out * 255).round().astype(np.uint8)


@pytest.mark.parametrize(("preset", "patch", "size"), CASES, ids=[c[1] for c in CASES])
def test_patched_artifact_matches_patched_pytorch(
    tmp_path: Path, preset: str, patch: str, size: int
) -> None:
    artifact = _compile(tmp_path, preset, patch, size)
    pipe = load(artifact)
    assert pipe.manifest.patches and pipe.manifest.patches[0]["count"] >= 1
    steps, seed = 6, 5
    latents = np.random.default_rng(7).standard_normal((1, 4, size // 8, size // 8),
                                                        dtype=np.float32)
    prompt, label = "a castle on a hill", 3
    result = pipe(GenerateRequest(prompt=prompt, class_label=label, steps=steps, seed=seed,
                                  height=size, width=size, latents=latents))
    plan = StepPlan.from_manifest(pipe.manifest.step_plan)
    assert result.request["schedule"] == plan.schedule(steps)
    ref = _reference(preset, patch, latents, steps, seed, plan, prompt, label)
    ours = result.images[0]
    diff = int(np.abs(ours.astype(int) - ref.astype(int)).max())
    assert diff <= 2, f"{patch}: max pixel difference {diff}/255"
    assert ours.std() > 1
