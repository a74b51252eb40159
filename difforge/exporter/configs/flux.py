"""FLUX-style transformers: no classifier-free guidance, so every batch axis is the image
count. The prompt reaches the transformer twice: CLIP's pooled output as
``pooled_projections`` and the token states of the T5 encoder (``text_encoder_2``; difforge's
tiny preset, which has no T5, uses CLIP's). A guidance-distilled model (FLUX.1-dev,
``guidance_embeds``) takes the guidance scale as an input."""

from __future__ import annotations

from typing import Any, cast

from difforge.exporter.configs.common import (
    TIMESTEP,
    BuildRequest,
    Component,
    text_encoder,
    vae_decoder,
)
from difforge.exporter.specs import ComponentSpec, Tensor
from difforge.exporter.wrappers import FluxDenoiser
from difforge.sources.text_folders import T5_WINDOW

GUIDANCE = Tensor("guidance", "float32", ("batch",), ("uniform", 1.0, 5.0))


def flux(req: BuildRequest) -> dict[str, Component]:
    source = req.source
    assert source.text_encoder is not None and source.vae is not None
    batch = req.image_batch
    # Packing needs an even latent grid: at least a multiple of 2.
    height, width = req.latent_axes(multiple=2)
    latent = ("batch", source.latent_channels, "height", "width")
    clip_cfg = cast(Any, source.text_encoder).config
    out: dict[str, Component] = {}
    if source.text_encoder_2 is not None:
        window = int(source.extras.get("t5_window") or T5_WINDOW)
        # T5's SDPA path reshapes a transposed view, which torch.export's fake tensors
        # refuse; its eager attention makes the copy explicit (same numbers).
        cast(Any, source.text_encoder_2).set_attn_implementation("eager")
        states_dim = int(cast(Any, source.text_encoder_2).config.d_model)
        out["text_encoder"] = text_encoder(
            source.text_encoder, batch, (("pooler_output", "pooled"),)
        )
        out["text_encoder_2"] = text_encoder(
            source.text_encoder_2, batch, (("last_hidden_state", "last"),), window=window
        )
    else:
        window, states_dim = int(clip_cfg.max_position_embeddings), int(clip_cfg.hidden_size)
        out["text_encoder"] = text_encoder(
            source.text_encoder,
            batch,
            (("last_hidden_state", "last"), ("pooler_output", "pooled")),
        )
    guided = bool(cast(Any, source.denoiser).config.guidance_embeds)
    out["denoiser"] = Component(
        ComponentSpec(
            role="denoiser",
            inputs=(
                Tensor("sample", "float32", latent),
                TIMESTEP,
                Tensor("encoder_hidden_states", "float32", ("batch", window, states_dim)),
                Tensor("pooled_projections", "float32", ("batch", int(clip_cfg.hidden_size))),
                *((GUIDANCE,) if guided else ()),
            ),
            outputs=(Tensor("noise_pred", "float32", latent),),
            axes={"batch": batch, "height": height, "width": width},
        ),
        FluxDenoiser(source.denoiser, req.wrapper_options.get("grid_kwarg"), guided),
    )
    out["vae_decoder"] = vae_decoder(req, height, width)
    return out
