"""Reference pipelines in PyTorch (diffusers) for the runtime's end-to-end tests: the same
weights, latents, per-step graph variants and per-step inputs as an artifact sees."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from difforge.artifact.step_plan import StepPlan
from difforge.patches import create_patch, parse_patch_arg
from difforge.patches.msw_msa import shift_table
from difforge.patches.stepped import SteppedPatch
from difforge.sources.base import SourceModel
from difforge.sources.presets import VOCAB_DIR, load_preset


def clip_tokenizer(pad_token: str = "<|endoftext|>") -> Any:
    """transformers' CLIPTokenizer on the vocabulary the presets ship (padding with
    end-of-text, as SD 1.x does, unless told: SD 2.x pads with "!")."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer(
        str(VOCAB_DIR / "vocab.json"),
        str(VOCAB_DIR / "merges.txt"),
        model_max_length=77,
        pad_token=pad_token,
    )


def sd_pipeline(
    source: SourceModel, scheduler_cls: Any = None, pad_token: str = "<|endoftext|>"
) -> Any:
    """diffusers' StableDiffusionPipeline on a preset's modules and shipped tokenizer files."""
    import diffusers

    config = {k: v for k, v in source.scheduler_config.items() if k != "_class_name"}
    tok = clip_tokenizer(pad_token)
    return diffusers.StableDiffusionPipeline(
        vae=source.vae,
        text_encoder=source.text_encoder,
        tokenizer=tok,
        unet=source.denoiser,
        scheduler=(scheduler_cls or diffusers.DDIMScheduler).from_config(config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _to_u8(images: np.ndarray) -> np.ndarray:
    return (images * 255).round().astype(np.uint8)


def _flux(
    source: SourceModel,
    config: dict[str, Any],
    latents: np.ndarray,
    steps: int,
    prompt: str,
    set_step: Any = None,
) -> np.ndarray:
    """FluxPipeline, fed the tiny CLIP's token states and pooled state as its prompt embeds;
    ``set_step(i)`` (a stepped patch's variant) before step 0 and after each step."""
    import diffusers

    tok = clip_tokenizer()
    ids = torch.tensor(
        tok([prompt], padding="max_length", max_length=77, truncation=True).input_ids
    )
    pipe = diffusers.FluxPipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler.from_config(config),
        vae=source.vae,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        transformer=source.denoiser,
    )
    b, c, h, w = latents.shape
    packed = torch.from_numpy(latents).reshape(b, c, h // 2, 2, w // 2, 2)
    packed = packed.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)
    with torch.no_grad():
        states, pooled = source.text_encoder(ids, return_dict=False)[:2]  # type: ignore[misc]
        out = pipe(
            prompt_embeds=states,
            pooled_prompt_embeds=pooled,
            latents=packed,
            height=h * 8,
            width=w * 8,
            num_inference_steps=steps,
            output_type="np",
            **_step_callback(set_step),
        ).images[0]
    return _to_u8(out)


def _step_callback(set_step: Any) -> dict[str, Any]:
    if set_step is None:
        return {}
    set_step(0)

    def on_step_end(p: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        set_step(i + 1)
        return kwargs

    return {"callback_on_step_end": on_step_end}


def patched_reference(
    preset: str,
    patches: list[str],
    latents: np.ndarray,
    steps: int,
    seed: int,
    plan: StepPlan,
    prompt: str,
    label: int,
) -> np.ndarray:
    import diffusers

    source = load_preset(preset, 0)
    patchers = [create_patch(parse_patch_arg(p)) for p in patches]
    for patcher in patchers:
        patcher.apply(source.denoiser)
    config = {k: v for k, v in source.scheduler_config.items() if k != "_class_name"}
    schedule = plan.schedule(steps)

    def set_variant(i: int) -> None:
        for patcher in patchers:
            if isinstance(patcher, SteppedPatch) and len(patcher.variants()) > 1 and i < steps:
                patcher.set_variant(schedule[i])

    if source.kind == "flux":
        stepped = any(isinstance(p, SteppedPatch) for p in patchers)
        return _flux(source, config, latents, steps, prompt, set_variant if stepped else None)
    sched = diffusers.DDIMScheduler.from_config(config)

    def set_step(i: int) -> dict[str, Any] | None:
        set_variant(i)
        if "msw_msa_shift" in plan.inputs and i < steps:
            return {"msw_msa_shift": torch.tensor([shift_table(steps, seed)[i]])}
        return None

    with torch.no_grad():
        if source.kind == "class-to-image":
            import diffusers.pipelines.dit.pipeline_dit as dit_mod

            pipe = diffusers.DiTPipeline(
                transformer=source.denoiser, vae=source.vae, scheduler=sched
            )
            original = dit_mod.randn_tensor
            dit_mod.randn_tensor = lambda *a, **k: torch.from_numpy(latents)
            try:
                out = pipe(
                    class_labels=[label],
                    guidance_scale=4.0,
                    num_inference_steps=steps,
                    output_type="np",
                ).images[0]
            finally:
                dit_mod.randn_tensor = original
            return (out * 255).round().astype(np.uint8)
        pipe = sd_pipeline(source)

        def on_step_end(p: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            extra = set_step(i + 1)
            if extra is not None:
                p._cross_attention_kwargs = extra
            return kwargs

        first = set_step(0)
        size = latents.shape[-1] * 8
        out = pipe(
            prompt,
            num_inference_steps=steps,
            guidance_scale=7.5,
            height=size,
            width=size,
            latents=torch.from_numpy(latents),
            output_type="np",
            cross_attention_kwargs=first,
            callback_on_step_end=on_step_end,
        ).images[0]
        return (out * 255).round().astype(np.uint8)
