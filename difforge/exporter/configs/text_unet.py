"""Text-conditioned U-Nets: Stable Diffusion 1.x/2.x (and the students that keep its
interface: LCM, TCD, Turbo, InstaFlow) and SDXL (two text encoders, pooled text embeddings and
``add_time_ids``).

A student with ``time_cond_proj_dim`` (an LCM) takes the guidance scale as an input and runs
no classifier-free guidance: its batch is the image count.
"""

from __future__ import annotations

from typing import Any, cast

from difforge.exporter.configs.common import (
    GUIDANCE,
    TIMESTEP,
    BuildRequest,
    Component,
    text_encoder,
    vae_decoder,
)
from difforge.exporter.specs import Axis, ComponentSpec, Tensor
from difforge.exporter.wrappers import UNetDenoiser

#: SDXL's ``add_time_ids``: original size, crop corner and target size, (h, w) each
TIME_IDS = 6


def _batch(req: BuildRequest) -> Axis:
    guided = bool(cast(Any, req.source.denoiser).config.time_cond_proj_dim)
    return req.image_batch if guided else req.cfg_batch


def _denoiser(req: BuildRequest, added: tuple[Tensor, ...], batch: Axis) -> Component:
    source = req.source
    unet_cfg = cast(Any, source.denoiser).config
    height, width = req.latent_axes()
    channels = source.latent_channels
    seq = int(cast(Any, source.text_encoder).config.max_position_embeddings)
    guidance = (GUIDANCE,) if unet_cfg.time_cond_proj_dim else ()
    inputs = (*added, *guidance, *req.extra_tensors())
    latent = ("batch", channels, "height", "width")
    return Component(
        ComponentSpec(
            role="denoiser",
            inputs=(
                Tensor("sample", "float32", latent),
                TIMESTEP,
                Tensor(
                    "encoder_hidden_states",
                    "float32",
                    ("batch", seq, int(unet_cfg.cross_attention_dim)),
                ),
                *inputs,
            ),
            outputs=(Tensor("noise_pred", "float32", latent),),
            axes={"batch": batch, "height": height, "width": width},
        ),
        UNetDenoiser(source.denoiser, tuple(t.name for t in inputs)),
    )


def stable_diffusion(req: BuildRequest) -> dict[str, Component]:
    """CLIP text encoder (its last hidden states), U-Net, VAE decoder."""
    source = req.source
    assert source.text_encoder is not None
    batch = _batch(req)
    height, width = req.latent_axes()
    return {
        "text_encoder": text_encoder(
            source.text_encoder, batch, (("last_hidden_state", "last"),)
        ),
        "denoiser": _denoiser(req, (), batch),
        "vae_decoder": vae_decoder(req, height, width),
    }


def sdxl(req: BuildRequest) -> dict[str, Component]:
    """Two CLIP text encoders (penultimate hidden states, concatenated by the runtime; the
    second's projected pooled output), the U-Net with ``text_embeds`` and ``time_ids``."""
    source = req.source
    assert source.text_encoder is not None and source.text_encoder_2 is not None
    batch = _batch(req)
    height, width = req.latent_axes()
    pooled_dim = int(cast(Any, source.text_encoder_2).config.projection_dim)
    added = (
        Tensor("text_embeds", "float32", ("batch", pooled_dim)),
        Tensor("time_ids", "float32", ("batch", TIME_IDS), ("uniform", 0.0, 1024.0)),
    )
    return {
        "text_encoder": text_encoder(
            source.text_encoder, batch, (("hidden_states", "penultimate"),)
        ),
        "text_encoder_2": text_encoder(
            source.text_encoder_2,
            batch,
            (("hidden_states", "penultimate"), ("text_embeds", "pooled")),
        ),
        "denoiser": _denoiser(req, added, batch),
        "vae_decoder": vae_decoder(req, height, width),
    }
