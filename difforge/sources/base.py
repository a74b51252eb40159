"""What every model source hands to the exporter: modules, sampler settings and defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from difforge.artifact.sections import Resolution

__all__ = ["Resolution", "SourceModel"]


@dataclass
class SourceModel:
    """A loaded diffusion model, ready to patch and export.

    ``kind`` is "text-to-image" (CLIP text encoder + U-Net + VAE: SD 1.x/2.x and the students
    that keep its interface), "sdxl" (two CLIP encoders, pooled embeddings and size
    conditioning), "flux" (CLIP pooled output + T5 token states + transformer) or
    "class-to-image" (class labels + U-Net or transformer, with or without a VAE).
    """

    name: str
    kind: str
    denoiser: torch.nn.Module
    vae: torch.nn.Module | None
    text_encoder: torch.nn.Module | None
    tokenizer_dir: Path | None
    scheduler_name: str
    scheduler_config: dict[str, Any]
    resolution: Resolution
    #: Written to the manifest: where the weights came from, and whether they are random.
    description: dict[str, Any]
    #: set when the model's own scheduler class is sampled by another runtime sampler
    scheduler_note: str | None = None
    default_steps: int = 20
    default_guidance: float = 7.5
    num_classes: int = 0
    null_class: int = 0
    extras: dict[str, Any] = field(default_factory=dict)
    #: the second text encoder and its tokenizer (SDXL's bigger CLIP, FLUX's T5)
    text_encoder_2: torch.nn.Module | None = None
    tokenizer_2_dir: Path | None = None
    #: what the user should know about how the model was loaded
    notes: list[str] = field(default_factory=list)

    @property
    def random_weights(self) -> bool:
        return bool(self.description.get("random_weights"))

    @property
    def latent_channels(self) -> int:
        # The VAE's latent width; a FLUX transformer's in_channels counts packed 2x2 patches.
        if self.vae is not None:
            return int(cast(Any, self.vae).config.latent_channels)
        return int(cast(Any, self.denoiser).config.in_channels)

    @property
    def vae_scale_factor(self) -> int:
        if self.vae is None:
            return 1
        return int(2 ** (len(cast(Any, self.vae).config.block_out_channels) - 1))

    @property
    def shift_factor(self) -> float:
        if self.vae is None:
            return 0.0
        return float(cast(Any, self.vae).config.shift_factor or 0.0)

    @property
    def scaling_factor(self) -> float:
        if self.vae is None:
            return 1.0
        return float(cast(Any, self.vae).config.scaling_factor)
