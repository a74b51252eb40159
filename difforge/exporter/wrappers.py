"""The modules that fix each exported graph's interface: plain tensors in, the tensors the
runtime reads out, and the little arithmetic that belongs to a component moved into its graph
(the VAE's latent scaling, FLUX's 2x2 packing, an LCM's guidance embedding, DiT's
learned-sigma channels dropped)."""

from __future__ import annotations

import math
from typing import Any, cast

import torch

from difforge.errors import DifforgeError


class TextEncoder(torch.nn.Module):
    """A CLIP or T5 text encoder; ``outputs`` picks what the pipeline reads, in order:
    "last" (the final hidden states), "penultimate" (SDXL's ``hidden_states[-2]``) and
    "pooled" (CLIP's pooled output, or the projected one of ``CLIPTextModelWithProjection``)."""

    def __init__(self, model: torch.nn.Module, outputs: tuple[str, ...] = ("last",)) -> None:
        super().__init__()
        self.model = model
        self.outputs = outputs

    def forward(self, input_ids: torch.Tensor) -> Any:
        hidden = "penultimate" in self.outputs
        out = self.model(input_ids, output_hidden_states=hidden, return_dict=True)
        picked = []
        for name in self.outputs:
            if name == "last":
                picked.append(out.last_hidden_state)
            elif name == "penultimate":
                picked.append(out.hidden_states[-2])
            else:  # pooled: CLIPTextModelWithProjection's text_embeds, else pooler_output
                pooled = getattr(out, "text_embeds", None)
                picked.append(pooled if pooled is not None else out.pooler_output)
        return picked[0] if len(picked) == 1 else tuple(picked)


class FluxDenoiser(torch.nn.Module):
    """FLUX on unpacked latents: packs 2x2 patches and builds the RoPE ids inside the graph,
    so the runtime's loop is the same as for a U-Net. ``grid_kwarg`` hands the token grid to
    patches that need it (CLEAR) through ``joint_attention_kwargs``; ``guided`` models
    (FLUX.1-dev) take the guidance scale as an input, as FluxPipeline passes it."""

    def __init__(
        self, transformer: torch.nn.Module, grid_kwarg: str | None = None, guided: bool = False
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.grid_kwarg = grid_kwarg
        self.guided = guided

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        pooled_projections: torch.Tensor,
        guidance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, c, height, width = sample.shape
        h, w = height // 2, width // 2
        packed = sample.reshape(b, c, h, 2, w, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, h * w, c * 4)
        rows = torch.arange(h, device=sample.device).reshape(h, 1).expand(h, w)
        cols = torch.arange(w, device=sample.device).reshape(1, w).expand(h, w)
        img_ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3).float()
        txt_ids = torch.zeros(encoder_hidden_states.shape[1], 3, device=sample.device)
        kwargs = {self.grid_kwarg: (h, w)} if self.grid_kwarg else None
        out = self.transformer(
            hidden_states=packed,
            encoder_hidden_states=encoder_hidden_states,
            pooled_projections=pooled_projections,
            timestep=timestep / 1000,
            img_ids=img_ids,
            txt_ids=txt_ids,
            guidance=guidance if self.guided else None,
            joint_attention_kwargs=kwargs,
            return_dict=False,
        )[0]
        return out.reshape(b, h, w, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, height, width)


class UNetDenoiser(torch.nn.Module):
    """A diffusers ``UNet2DConditionModel`` on text conditioning. The graph's inputs after
    the sample, timestep and text states are named in ``inputs``: ``guidance`` (the scale of a
    guidance-distilled student, made into its ``timestep_cond`` embedding inside the graph),
    ``text_embeds`` and ``time_ids`` (SDXL's added conditions); any other name is a patch's
    per-step input, handed to the attention processors as ``cross_attention_kwargs``."""

    ADDED = ("text_embeds", "time_ids")

    def __init__(self, unet: torch.nn.Module, inputs: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.unet = unet
        self.inputs = inputs
        self.cond_dim = int(cast(Any, unet).config.time_cond_proj_dim or 0)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        *extra: torch.Tensor,
    ) -> torch.Tensor:
        named = dict(zip(self.inputs, extra, strict=True))
        cond = None
        if self.cond_dim:
            cond = guidance_embedding(named.pop("guidance"), self.cond_dim).to(sample.dtype)
        added = {k: named.pop(k) for k in self.ADDED if k in named}
        return self.unet(
            sample,
            timestep,
            encoder_hidden_states,
            timestep_cond=cond,
            cross_attention_kwargs=named or None,
            added_cond_kwargs=added or None,
            return_dict=False,
        )[0]


def guidance_embedding(guidance: torch.Tensor, dim: int) -> torch.Tensor:
    """LCM's guidance-scale embedding: sinusoid(1000·(w − 1), dim), as ``timestep_cond``.

    (diffusers' ``LatentConsistencyModelPipeline.get_guidance_scale_embedding`` with the
    pipeline's ``w = guidance_scale − 1``.)
    """
    w = (guidance.to(torch.float32) - 1.0) * 1000.0
    half = dim // 2
    freq = torch.exp(
        torch.arange(half, dtype=torch.float32, device=w.device)
        * -(math.log(10000.0) / (half - 1))
    )
    angles = w[:, None] * freq[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


class ClassUNetDenoiser(torch.nn.Module):
    """A class-conditional ``UNet2DConditionModel`` (difforge's digits models).

    The class reaches the U-Net twice, as diffusers allows: through ``num_class_embeds``
    (added to the time embedding) and as a one-hot token that ``encoder_hid_proj`` maps to
    the single key of each cross-attention. Guidance-distilled students (``time_cond_proj_dim``
    set) take the guidance scale as an input instead of running classifier-free guidance.
    """

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet
        config = cast(Any, unet).config
        self.num_tokens = int(config.encoder_hid_dim)
        self.cond_dim = int(config.time_cond_proj_dim or 0)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        class_labels: torch.Tensor,
        guidance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        classes = torch.arange(self.num_tokens, device=class_labels.device)
        one_hot = (class_labels[:, None] == classes[None, :]).to(sample.dtype)[:, None, :]
        cond = None
        if self.cond_dim:
            if guidance is None:
                raise DifforgeError("this guidance-distilled U-Net needs a guidance input")
            cond = guidance_embedding(guidance, self.cond_dim).to(sample.dtype)
        return self.unet(
            sample,
            timestep,
            one_hot,
            class_labels=class_labels,
            timestep_cond=cond,
            return_dict=False,
        )[0]


class DiTDenoiser(torch.nn.Module):
    def __init__(self, transformer: torch.nn.Module) -> None:
        super().__init__()
        self.transformer = transformer
        self.channels = int(cast(Any, transformer).config.in_channels)

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, class_labels: torch.Tensor
    ) -> torch.Tensor:
        out = self.transformer(
            sample, timestep=timestep, class_labels=class_labels, return_dict=False
        )[0]
        # The learned-variance half is never used by the samplers difforge runs.
        return out[:, : self.channels]


class VaeDecoder(torch.nn.Module):
    def __init__(self, vae: torch.nn.Module, scaling_factor: float, shift: float = 0.0) -> None:
        super().__init__()
        self.vae = vae
        self.inv_scale = 1.0 / scaling_factor
        self.shift = shift

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        z = latent * self.inv_scale + self.shift if self.shift else latent * self.inv_scale
        return self.vae.decode(z, return_dict=False)[0]  # type: ignore[operator]
