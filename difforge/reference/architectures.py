"""The digits reference denoisers: diffusers classes with small, fixed configurations.

Both work in pixel space on 32×32×1 images and are trained as rectified flows (the target is
``noise − image``; the timestep is σ·1000, as diffusers' ``FlowMatchEulerDiscreteScheduler``
feeds it). Class ``NULL_CLASS`` is the unconditional label of classifier-free guidance.
"""

from __future__ import annotations

from typing import Any, cast

import torch

from difforge.reference.data import NUM_CLASSES, RESOLUTION

NULL_CLASS = NUM_CLASSES
#: Width of the guidance-scale embedding of the distilled students (LCM uses 256).
GUIDANCE_EMBED_DIM = 32


def digits_unet_config(guidance_embedding: bool = False) -> dict[str, Any]:
    """U-Net 32² → 16² → 8², channels 16/32/64; one transformer block at 16² (256 tokens)
    with self-attention (``attn1``) and a cross-attention (``attn2``) to the class token."""
    return {
        "sample_size": RESOLUTION,
        "in_channels": 1,
        "out_channels": 1,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "mid_block_type": None,
        "block_out_channels": (16, 32, 64),
        "layers_per_block": 1,
        "norm_num_groups": 8,
        # diffusers reads U-Net "attention_head_dim" as the number of heads: 2 heads of 16.
        "attention_head_dim": 2,
        "cross_attention_dim": 32,
        "encoder_hid_dim": NUM_CLASSES + 1,
        "encoder_hid_dim_type": "text_proj",
        "num_class_embeds": NUM_CLASSES + 1,
        "time_cond_proj_dim": GUIDANCE_EMBED_DIM if guidance_embedding else None,
    }


def digits_dit_config() -> dict[str, Any]:
    """DiT with 2×2 patches (16² = 256 tokens), 4 blocks of width 64 (2 heads of 32)."""
    return {
        "num_attention_heads": 2,
        "attention_head_dim": 32,
        "in_channels": 1,
        "out_channels": 1,
        "num_layers": 4,
        "sample_size": RESOLUTION,
        "patch_size": 2,
        "num_embeds_ada_norm": NUM_CLASSES,
    }


def build_digits_unet(seed: int, guidance_embedding: bool = False) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cast(torch.nn.Module, UNet2DConditionModel(**digits_unet_config(guidance_embedding)))


def build_digits_dit(seed: int) -> torch.nn.Module:
    from diffusers import DiTTransformer2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cast(torch.nn.Module, DiTTransformer2DModel(**digits_dit_config()))


def student_from_teacher(teacher: torch.nn.Module) -> torch.nn.Module:
    """The teacher's U-Net plus a guidance-embedding input (``time_cond_proj_dim``).

    The new ``cond_proj`` starts at zero, so the student starts as the teacher's conditional
    branch (LCM's distillation copies the teacher the same way).
    """
    student = build_digits_unet(0, guidance_embedding=True)
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    if unexpected or any("cond_proj" not in key for key in missing):
        raise RuntimeError(f"teacher/student mismatch: {missing=} {unexpected=}")
    with torch.no_grad():
        cast(Any, student).time_embedding.cond_proj.weight.zero_()
    return student


class Denoiser:
    """One calling convention for every digits model: ``v = f(x_σ, σ·1000, labels[, w])``."""

    def __init__(self, model: torch.nn.Module) -> None:
        from difforge.exporter.wrappers import ClassUNetDenoiser, DiTDenoiser

        self.model = model
        name = type(model).__name__
        self.module: torch.nn.Module = (
            DiTDenoiser(model) if name == "DiTTransformer2DModel" else ClassUNetDenoiser(model)
        )
        self.guidance_input = bool(getattr(self.module, "cond_dim", 0))

    def __call__(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor,
        guidance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.guidance_input:
            return cast(torch.Tensor, self.module(x, t, labels, guidance))
        return cast(torch.Tensor, self.module(x, t, labels))
