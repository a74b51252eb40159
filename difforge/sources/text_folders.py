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


def _clip(
    path: Path, meta: dict[str, Any], name: str, tok_name: str, cls: str = "CLIPTextModel"
) -> tuple[Any, Path]:
    """A CLIP text encoder and its tokenizer folder, the tokenizer checked first (fails fast)
    and its window held to the encoder's positions."""
    tok = path / tok_name
    window = check_clip_tokenizer(tok).max_length
    encoder = load_text_encoder(path, meta, name, cls)
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
    encoder_2, tok_2 = (
        _clip(path, meta, "text_encoder_2", "tokenizer_2", "CLIPTextModelWithProjection")
        if sdxl
        else (None, None)
    )
    vae = load_module(AutoencoderKL, path / "vae", "vae")
    unet = load_module(UNet2DConditionModel, path / "unet", "unet")
    _check_unet(path, cls_name, unet.config, encoder_2)
    if sdxl and vae.config.get("latents_mean") is not None:
        raise DifforgeError(
            f"{path / 'vae'}: a VAE with latents_mean/latents_std (Playground v2.5-style) is "
            "not supported yet; its latents would be decoded without them"
        )
    scale = int(2 ** (len(vae.config.block_out_channels) - 1))
    factor = scale * 2 ** (len(unet.config.block_out_channels) - 1)
    native = int(unet.config.sample_size) * scale
    steps, guidance = DEFAULTS.get(cls_name, DEFAULTS["StableDiffusionPipeline"])
    if sched_name == "rectified-flow":
        steps, guidance = DEFAULTS[RECTIFIED_FLOW]
    elif sched_name in ("lcm", "tcd") and cls_name != "LatentConsistencyModelPipeline":
        # LCM-LoRA or TCD weights fused: 4 steps without classifier-free guidance (the
        # authors' settings), unless the U-Net embeds the scale
        steps, guidance = 4, (DEFAULTS["LatentConsistencyModelPipeline"][1]
                              if unet.config.time_cond_proj_dim else 1.0)
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
        resolution=_range(native, factor),
        description=_describe(path, cls_name),
        default_steps=steps,
        default_guidance=guidance,
        extras={
            "guidance_input": bool(unet.config.time_cond_proj_dim),
            "zero_negative": sdxl and bool(meta.get("force_zeros_for_empty_prompt", True)),
        },
    )


def _check_unet(path: Path, cls_name: str, config: Any, encoder_2: Any) -> None:
    """What the pipeline class implies about its U-Net, checked before anything is traced."""
    where = path / "unet" / "config.json"
    if cls_name == "LatentConsistencyModelPipeline" and not config.time_cond_proj_dim:
        raise DifforgeError(
            f"{where}: a LatentConsistencyModelPipeline's U-Net needs time_cond_proj_dim (its "
            "guidance embedding); this one has none"
        )
    if encoder_2 is not None:
        expected = 6 * int(config.addition_time_embed_dim or 0) + int(
            encoder_2.config.projection_dim
        )
        if config.addition_embed_type != "text_time" or (
            config.projection_class_embeddings_input_dim != expected
        ):
            raise DifforgeError(
                f"{where}: not an SDXL base U-Net (its added conditioning takes "
                f"{config.projection_class_embeddings_input_dim} values, SDXL's size and text "
                f"conditioning {expected}); the SDXL refiner is not supported"
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
    t5 = load_text_encoder(path, meta, "text_encoder_2", "T5EncoderModel")
    vae = load_module(AutoencoderKL, path / "vae", "vae")
    transformer = load_module(FluxTransformer2DModel, path / "transformer", "transformer")
    sizes = {
        "joint_attention_dim": (transformer.config.joint_attention_dim, t5.config.d_model),
        "pooled_projection_dim": (
            transformer.config.pooled_projection_dim,
            text_encoder.config.hidden_size,
        ),
    }
    for key, (theirs, encoder) in sizes.items():
        if theirs != encoder:
            raise DifforgeError(
                f"{path / 'transformer'}: {key} {theirs} does not match its text encoder's "
                f"{encoder}"
            )
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


def _range(native: int, factor: int) -> Resolution:
    """Half to one and a half times the native size: 256 to 768 px for SD 1.5, 512 to 1536 for
    SDXL. Wider ranges are asked for with --resolution; at twice the native size an SD 1.5
    U-Net's attention alone needs tens of GB to verify."""
    top = max(native, native * 3 // 2 // factor * factor)
    return Resolution(min=max(factor, native // 2), default=native, max=top, multiple=factor)


def _describe(path: Path, cls_name: str) -> dict[str, Any]:
    return {
        "type": "diffusers",
        "path": str(path.resolve()),
        "pipeline": cls_name,
        "random_weights": False,
    }
