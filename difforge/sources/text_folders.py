"""Text-to-image diffusers folders: Stable Diffusion 1.x/2.x (epsilon and v-prediction) and
the students saved in its layout (LCM, TCD, LCM-LoRA or Lightning fused, SD-Turbo),
``LatentConsistencyModelPipeline``, InstaFlow's ``RectifiedFlowPipeline``, SDXL (and
SDXL-Turbo, LCM-SDXL) and FLUX (schnell and guidance-distilled dev).

Each loader reads what its diffusers pipeline reads, and nothing is guessed: the tokenizers'
pad tokens and windows, the scheduler class, ``force_zeros_for_empty_prompt``, whether the
U-Net takes a guidance embedding (``time_cond_proj_dim``) or the transformer a guidance
input (``guidance_embeds``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from difforge.errors import DifforgeError
from difforge.sources.base import Resolution, SourceModel
from difforge.sources.folder_io import (
    folder_scheduler,
    load_module,
    load_text_encoder,
    read_json,
)
from difforge.sources.tokenizer import check_clip_tokenizer

#: InstaFlow's pipeline class (gnobitab/InstaFlow ``code/pipeline_rf.py``): an SD 1.5 U-Net
#: sampled by Euler on a rectified flow
RECTIFIED_FLOW = "RectifiedFlowPipeline"
#: FluxPipeline's ``max_sequence_length`` default: the T5 window, when the tokenizer allows it
T5_WINDOW = 512

#: (default steps, default guidance) by pipeline class; consistency samplers take 4 steps
DEFAULTS = {
    "StableDiffusionPipeline": (20, 7.5),
    "LatentConsistencyModelPipeline": (4, 8.5),
    RECTIFIED_FLOW: (1, 0.0),
    "StableDiffusionXLPipeline": (20, 5.0),
}


def _sampler(
    path: Path, cls_name: str, requested: str | None
) -> tuple[str, dict[str, Any], str | None]:
    """The folder's sampler. InstaFlow's pipeline samples by hand whatever scheduler its folder
    holds; InstaFlow checkpoints saved as ``StableDiffusionPipeline`` folders are compiled with
    ``--scheduler rectified-flow``."""
    config_path = path / "scheduler" / "scheduler_config.json"
    if cls_name == RECTIFIED_FLOW:
        if requested not in (None, "rectified-flow"):
            raise DifforgeError(
                f"--scheduler {requested} does not fit {RECTIFIED_FLOW}: InstaFlow's models "
                "are sampled with rectified-flow"
            )
        config = read_json(config_path) if config_path.is_file() else {}
        return "rectified-flow", config, None
    if requested == "rectified-flow" and cls_name == "StableDiffusionPipeline":
        config = read_json(config_path) if config_path.is_file() else {}
        return "rectified-flow", config, (
            f"{cls_name} sampled with rectified-flow, as asked (--scheduler): right for "
            "InstaFlow and 2-rectified-flow checkpoints only"
        )
    return folder_scheduler(path, requested)


def _clip(path: Path, meta: dict[str, Any], name: str, tok_name: str) -> tuple[Any, Path]:
    """A CLIP text encoder and its tokenizer folder, the tokenizer checked first (fails fast)
    and its window held to the encoder's positions."""
    tok = path / tok_name
    window = check_clip_tokenizer(tok).max_length
    encoder = load_text_encoder(path, meta, name)
    positions = int(encoder.config.max_position_embeddings)
    if window != positions:
        raise DifforgeError(
            f"{tok}: model_max_length {window} is not the text encoder's "
            f"{positions} positions (difforge exports the text encoder at its full window)"
        )
    return encoder, tok


def text_unet_folder(
    path: Path, meta: dict[str, Any], cls_name: str, scheduler: str | None
) -> SourceModel:
    """An SD 1.x/2.x-layout or SDXL folder."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    sched_name, sched_config, note = _sampler(path, cls_name, scheduler)
    text_encoder, tok = _clip(path, meta, "text_encoder", "tokenizer")
    sdxl = cls_name == "StableDiffusionXLPipeline"
    encoder_2, tok_2 = _clip(path, meta, "text_encoder_2", "tokenizer_2") if sdxl else (None, None)
    vae = load_module(AutoencoderKL, path / "vae", "vae")
    unet = load_module(UNet2DConditionModel, path / "unet", "unet")
    scale = int(2 ** (len(vae.config.block_out_channels) - 1))
    factor = scale * 2 ** (len(unet.config.block_out_channels) - 1)
    native = int(unet.config.sample_size) * scale
    steps, guidance = DEFAULTS.get(cls_name, DEFAULTS["StableDiffusionPipeline"])
    if sched_name in ("lcm", "tcd"):
        steps = 4
    return SourceModel(
        name=path.name,
        kind="sdxl" if sdxl else "text-to-image",
        denoiser=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer_dir=tok,
        text_encoder_2=encoder_2,
        tokenizer_2_dir=tok_2,
        scheduler_name=sched_name,
        scheduler_config=sched_config,
        scheduler_note=note,
        resolution=Resolution(
            min=max(factor, native // 2), default=native, max=native * 2, multiple=factor
        ),
        description=_describe(path, cls_name),
        default_steps=steps,
        default_guidance=guidance,
        extras={
            "guidance_input": bool(unet.config.time_cond_proj_dim),
            "zero_negative": sdxl and bool(meta.get("force_zeros_for_empty_prompt", True)),
        },
    )


def flux_folder(path: Path, meta: dict[str, Any], scheduler: str | None) -> SourceModel:
    """A FluxPipeline folder: CLIP (pooled) and T5 (token states) encoders, the transformer
    (guidance-distilled when ``guidance_embeds``), a 16-channel VAE with a shift."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel

    from difforge.sources.tokenizer_json import read_t5_tokenizer

    sched_name, sched_config, note = folder_scheduler(path, scheduler)
    if sched_name == "flow-euler":  # FluxPipeline hands the scheduler its own sigmas
        sched_config = {**sched_config, "flux_sigmas": True}
    text_encoder, tok = _clip(path, meta, "text_encoder", "tokenizer")
    t5_settings = read_t5_tokenizer(path / "tokenizer_2")
    t5 = load_text_encoder(path, meta, "text_encoder_2")
    vae = load_module(AutoencoderKL, path / "vae", "vae")
    transformer = load_module(FluxTransformer2DModel, path / "transformer", "transformer")
    guided = bool(transformer.config.guidance_embeds)
    scale = int(2 ** (len(vae.config.block_out_channels) - 1))
    factor = scale * 2  # latents are packed in 2x2 patches
    native = 128 * scale  # FluxPipeline's default_sample_size
    return SourceModel(
        name=path.name,
        kind="flux",
        denoiser=transformer,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer_dir=tok,
        text_encoder_2=t5,
        tokenizer_2_dir=path / "tokenizer_2",
        scheduler_name=sched_name,
        scheduler_config=sched_config,
        scheduler_note=note,
        resolution=Resolution(min=native // 4, default=native, max=native, multiple=factor),
        description=_describe(path, "FluxPipeline"),
        # FLUX.1-dev: 28 steps at guidance 3.5; schnell: 4 steps, no guidance
        default_steps=28 if guided else 4,
        default_guidance=3.5 if guided else 0.0,
        extras={"guidance_input": guided, "t5_window": min(t5_settings.max_length, T5_WINDOW)},
    )


def _describe(path: Path, cls_name: str) -> dict[str, Any]:
    return {
        "type": "diffusers",
        "path": str(path.resolve()),
        "pipeline": cls_name,
        "random_weights": False,
    }
