"""A tiny, seeded FLUX transformer for tests and presets (no download).

Same architecture as FLUX.1 (double-stream then single-stream blocks, joint text/image
attention with 3-axis RoPE), shrunk to 2 heads x 16 dims. ``in_channels`` 16 is the packed
2 x 2 patch of a 4-channel latent, as FluxPipeline packs latents.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import FluxTransformer2DModel

__all__ = [
    "TINY_FLUX_CONFIG",
    "build_tiny_flux_transformer",
    "pack_latents",
    "prepare_ids",
    "unpack_latents",
]

TINY_FLUX_CONFIG: dict[str, object] = {
    "patch_size": 1,
    "in_channels": 16,
    "out_channels": None,
    "num_layers": 2,
    "num_single_layers": 2,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,
    "pooled_projection_dim": 32,
    "guidance_embeds": False,
    # Sums to the head dim; each even, as RoPE pairs channels.
    "axes_dims_rope": (4, 6, 6),
}


def build_tiny_flux_transformer(seed: int = 0, **overrides: object) -> FluxTransformer2DModel:
    """The tiny FLUX transformer with weights drawn from ``seed`` (eval mode, float32).

    Default initialisation leaves some layers at zero or near-identity; weights are redrawn
    from N(0, 0.05) (norm scales 1 + N(0, 0.05)) so that every block changes the output.
    The caller's global RNG state is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FluxTransformer2DModel(**{**TINY_FLUX_CONFIG, **overrides})
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                noise = torch.randn(param.shape, generator=generator) * 0.05
                is_norm_scale = param.dim() == 1 and "norm" in name and name.endswith("weight")
                param.copy_(1.0 + noise if is_norm_scale else noise)
    return model.eval()


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) latents -> (B, H/2 * W/2, 4C) tokens, FluxPipeline's 2 x 2 packing."""
    b, c, h, w = latents.shape
    x = latents.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, height: Any, width: Any) -> torch.Tensor:
    """(B, h * w, 4C) tokens of an ``height`` x ``width`` token grid -> (B, C, 2h, 2w)."""
    b, _, c4 = tokens.shape
    x = tokens.reshape(b, height, width, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c4 // 4, 2 * height, 2 * width)


def prepare_ids(height: int, width: int, text_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``img_ids`` (H*W, 3) with (0, row, col), row-major, and zero ``txt_ids`` (T, 3).

    ``height``/``width`` are the token grid (latent size / 2). Works with symbolic sizes.
    """
    rows = torch.arange(height).reshape(height, 1).expand(height, width)
    cols = torch.arange(width).reshape(1, width).expand(height, width)
    img_ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3)
    return img_ids.float(), torch.zeros(text_len, 3)
