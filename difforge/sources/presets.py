"""Built-in presets: small models built from configs with seeded, random weights.

They exist so that every stage can be exercised end to end with no model hub and no GPU;
their images are noise, and ``info`` and the manifest say so.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from difforge.errors import DifforgeError
from difforge.sources.base import Resolution, SourceModel

VOCAB_DIR = Path(__file__).parent / "vocab"

SD_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}

DIT_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "clip_sample": False,
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}


def _describe(name: str, seed: int) -> dict[str, Any]:
    return {
        "type": "preset",
        "name": name,
        "seed": seed,
        "random_weights": True,
        "weights": f"random (seeded, seed={seed}): images are noise; for testing the toolchain",
    }


def _no_zero_layers(module: torch.nn.Module) -> torch.nn.Module:
    """Give zero-initialised weights (DiT's adaLN-zero, output projections) small random values.

    A freshly built DiT outputs exactly zero, which would make every parity check vacuous.
    """
    with torch.no_grad():
        for param in module.parameters():
            if param.numel() > 1 and not param.any():
                param.normal_(0.0, 0.02)
    return module


def tiny_vae(shift_factor: float | None = None) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    # Four blocks give SD's 8x latent factor at a fraction of its width.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=256,
        scaling_factor=0.18215,
        shift_factor=shift_factor,
    ).eval()


def tiny_clip() -> torch.nn.Module:
    """A 2-layer CLIP text encoder over the shipped vocabulary (draws from torch's global RNG)."""
    import json

    from transformers import CLIPTextConfig, CLIPTextModel

    vocab_size = len(json.loads((VOCAB_DIR / "vocab.json").read_text()))
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
        )
    ).eval()


def tiny_sd_unet(seed: int = 0) -> torch.nn.Module:
    """tiny-sd's U-Net: two cross-attention levels (32/64 channels), attention at full latent
    resolution, so attention cost dominates as the resolution grows."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=32,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=8,
    ).eval()


def tiny_dit_transformer(seed: int = 0) -> torch.nn.Module:
    """tiny-dit's class-conditioned DiT, with no layer left at its zero initialisation."""
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(seed)
    transformer = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        sample_size=16,
        patch_size=2,
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_zero",
    ).eval()
    _no_zero_layers(transformer)
    return transformer


def tiny_sd(seed: int = 0) -> SourceModel:
    unet = tiny_sd_unet(seed)
    vae = tiny_vae()
    text_encoder = tiny_clip()
    return SourceModel(
        name="tiny-sd",
        kind="text-to-image",
        denoiser=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer_dir=VOCAB_DIR,
        scheduler_name="ddim",
        scheduler_config=dict(SD_SCHEDULER),
        resolution=Resolution(min=128, default=256, max=512, multiple=16),
        description=_describe("tiny-sd", seed),
        default_steps=20,
        default_guidance=7.5,
    )


def tiny_dit(seed: int = 0) -> SourceModel:
    transformer = tiny_dit_transformer(seed)
    return SourceModel(
        name="tiny-dit",
        kind="class-to-image",
        denoiser=transformer,
        vae=tiny_vae(),
        text_encoder=None,
        tokenizer_dir=None,
        scheduler_name="ddim",
        scheduler_config=dict(DIT_SCHEDULER),
        # diffusers' DiT un-patchifies with height = width = sqrt(tokens) and switches its
        # position table on the input size: it runs at its configured size only.
        resolution=Resolution(min=128, default=128, max=128, multiple=16),
        description=_describe("tiny-dit", seed),
        default_steps=20,
        default_guidance=4.0,
        num_classes=1000,
        null_class=1000,
    )


def build_tiny_lk_unet(seed: int = 0) -> torch.nn.Module:
    """The tiny-sd UNet config (random seeded weights, eval) with LK/InceptionNeXt convs."""
    from difforge.sources.backbones.tiny_lk_unet import with_large_kernels

    return with_large_kernels(tiny_sd_unet(seed), seed)


def tiny_lk_unet(seed: int = 0) -> SourceModel:
    """tiny-sd with large-kernel resnet convs (UniRepLKNet K=13 blocks, InceptionNeXt mixers)."""
    source = tiny_sd(seed)
    source.denoiser = build_tiny_lk_unet(seed).eval()
    source.name = "tiny-lk-unet"
    source.description = _describe("tiny-lk-unet", seed)
    return source


FLUX_SCHEDULER = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}


def tiny_flux(seed: int = 0) -> SourceModel:
    """FLUX architecture (double/single-stream joint attention with RoPE), tiny, no guidance.

    One CLIP encoder provides both FLUX text inputs (its token states for the joint attention,
    its pooled state for the modulation) where FLUX.1 uses T5 and CLIP.
    """
    from difforge.sources.tiny_flux import build_tiny_flux_transformer

    torch.manual_seed(seed)
    text_encoder = tiny_clip()
    transformer = build_tiny_flux_transformer(
        seed, joint_attention_dim=64, pooled_projection_dim=64
    )
    return SourceModel(
        name="tiny-flux",
        kind="flux",
        denoiser=transformer,
        vae=tiny_vae(shift_factor=0.0),
        text_encoder=text_encoder,
        tokenizer_dir=VOCAB_DIR,
        scheduler_name="flow-euler",
        scheduler_config=dict(FLUX_SCHEDULER),
        resolution=Resolution(min=128, default=256, max=512, multiple=16),
        description=_describe("tiny-flux", seed),
        default_steps=8,
        default_guidance=1.0,
    )


PRESETS: dict[str, Callable[[int], SourceModel]] = {
    "tiny-flux": tiny_flux,
    "tiny-sd": tiny_sd,
    "tiny-dit": tiny_dit,
    "tiny-lk-unet": tiny_lk_unet,
}

DESCRIPTIONS = {
    "tiny-flux": "FLUX-architecture text-to-image (2+2 blocks, RoPE), flow matching, no CFG",
    "tiny-sd": "SD-style text-to-image: CLIP text encoder, cross-attn U-Net (32/64 ch), 8x VAE",
    "tiny-dit": "class-conditioned DiT (2 layers, patch 2) with the same 8x VAE",
    "tiny-lk-unet": "tiny-sd with UniRepLKNet (K=13) and InceptionNeXt resnet convs; see reparam",
}


def load_preset(name: str, seed: int = 0) -> SourceModel:
    try:
        builder = PRESETS[name]
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        raise DifforgeError(f"unknown preset '{name}' (known: {known})") from None
    return builder(seed)
