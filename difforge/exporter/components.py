"""The exportable components of each pipeline kind: a wrapper module plus its spec.

Wrappers fix the graph interface the runtime expects (plain tensors in, one tensor out) and
move the little arithmetic that belongs to a component into its graph (the VAE's latent
scaling; DiT's learned-sigma channels dropped).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import torch

from difforge.errors import DifforgeError
from difforge.exporter.specs import Axis, ComponentSpec, Tensor
from difforge.sources.base import SourceModel


class TextEncoder(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, pooled: bool = False) -> None:
        super().__init__()
        self.model = model
        self.pooled = pooled

    def forward(self, input_ids: torch.Tensor) -> Any:
        out = self.model(input_ids, return_dict=False)
        return (out[0], out[1]) if self.pooled else out[0]


class FluxDenoiser(torch.nn.Module):
    """FLUX on unpacked latents: packs 2x2 patches and builds the RoPE ids inside the graph,
    so the runtime's loop is the same as for a U-Net. ``grid_kwarg`` hands the token grid to
    patches that need it (CLEAR) through ``joint_attention_kwargs``."""

    def __init__(self, transformer: torch.nn.Module, grid_kwarg: str | None = None) -> None:
        super().__init__()
        self.transformer = transformer
        self.grid_kwarg = grid_kwarg

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        pooled_projections: torch.Tensor,
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
            packed,
            encoder_hidden_states,
            pooled_projections,
            timestep / 1000,
            img_ids,
            txt_ids,
            joint_attention_kwargs=kwargs,
            return_dict=False,
        )[0]
        return out.reshape(b, h, w, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, height, width)


class UNetDenoiser(torch.nn.Module):
    """A diffusers U-Net; patches' extra per-step inputs reach it as attention kwargs."""

    def __init__(self, unet: torch.nn.Module, extra: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.unet = unet
        self.extra = extra

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        *extra: torch.Tensor,
    ) -> torch.Tensor:
        kwargs = dict(zip(self.extra, extra, strict=True)) or None
        return self.unet(
            sample,
            timestep,
            encoder_hidden_states,
            cross_attention_kwargs=kwargs,
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


@dataclass
class Component:
    spec: ComponentSpec
    module: torch.nn.Module


def _latent_axes(source: SourceModel) -> tuple[Axis, Axis]:
    res = source.resolution
    f = source.vae_scale_factor
    m = res.multiple // f
    axis = Axis(min=res.min // f, opt=res.default // f, max=res.max // f, multiple=m)
    return axis, axis


def components_for(
    source: SourceModel,
    max_batch: int = 2,
    extra_inputs: list[Any] | None = None,
    wrapper_options: dict[str, Any] | None = None,
) -> dict[str, Component]:
    """Every component of ``source`` with its spec; batch ranges allow for CFG's doubling.

    ``extra_inputs`` (patches' ``ExtraInputSpec``) become additional denoiser inputs of fixed
    shape, passed to the U-Net as ``cross_attention_kwargs``; ``wrapper_options`` are what
    patches need the denoiser wrapper to pass (``Patch.wrapper_options``).
    """
    extras = list(extra_inputs or [])
    extra_tensors = tuple(
        Tensor(e.name, e.dtype, tuple(e.shape), ("int", 4) if e.dtype == "int64" else "normal")
        for e in extras
    )
    if extras and source.kind != "text-to-image":
        names = ", ".join(e.name for e in extras)
        raise DifforgeError(f"per-step inputs ({names}) are supported on U-Net models only")
    height, width = _latent_axes(source)
    if source.kind == "flux":
        grid = (wrapper_options or {}).get("grid_kwarg")
        return _flux_components(source, max_batch, height, width, grid)
    cfg_batch = Axis(1, 2, 2 * max_batch)
    image_batch = Axis(1, 1, max_batch)
    channels = source.latent_channels
    latent = Tensor("sample", "float32", ("batch", channels, "height", "width"))
    out: dict[str, Component] = {}
    if source.kind == "text-to-image":
        assert source.text_encoder is not None
        cfg = cast(Any, source.text_encoder).config
        seq, hidden = int(cfg.max_position_embeddings), int(cfg.hidden_size)
        out["text_encoder"] = Component(
            ComponentSpec(
                role="text_encoder",
                inputs=(
                    Tensor("input_ids", "int64", ("batch", seq), ("int", int(cfg.vocab_size))),
                ),
                outputs=(Tensor("last_hidden_state", "float32", ("batch", seq, hidden)),),
                axes={"batch": cfg_batch},
            ),
            TextEncoder(source.text_encoder),
        )
        ctx_dim = int(cast(Any, source.denoiser).config.cross_attention_dim)
        out["denoiser"] = Component(
            ComponentSpec(
                role="denoiser",
                inputs=(
                    latent,
                    Tensor("timestep", "float32", ("batch",), "timestep"),
                    Tensor("encoder_hidden_states", "float32", ("batch", seq, ctx_dim)),
                    *extra_tensors,
                ),
                outputs=(Tensor("noise_pred", "float32", ("batch", channels, "height", "width")),),
                axes={"batch": cfg_batch, "height": height, "width": width},
            ),
            UNetDenoiser(source.denoiser, tuple(e.name for e in extras)),
        )
    else:
        is_unet = type(source.denoiser).__name__ == "UNet2DConditionModel"
        guidance_input = bool(source.extras.get("guidance_input"))
        # A guidance-distilled student takes the scale as an input: no CFG doubling.
        batch = Axis(1, 1, max_batch) if guidance_input else cfg_batch
        guidance = (Tensor("guidance", "float32", ("batch",), ("uniform", 1.0, 4.0)),)
        out["denoiser"] = Component(
            ComponentSpec(
                role="denoiser",
                inputs=(
                    latent,
                    Tensor("timestep", "float32", ("batch",), "timestep"),
                    Tensor("class_labels", "int64", ("batch",), ("int", source.num_classes + 1)),
                    *(guidance if guidance_input else ()),
                ),
                outputs=(Tensor("noise_pred", "float32", ("batch", channels, "height", "width")),),
                axes={"batch": batch, "height": height, "width": width},
            ),
            ClassUNetDenoiser(source.denoiser) if is_unet else DiTDenoiser(source.denoiser),
        )
    if source.vae is not None:
        f = source.vae_scale_factor
        out["vae_decoder"] = Component(
            ComponentSpec(
                role="vae_decoder",
                inputs=(Tensor("latent", "float32", ("batch", channels, "height", "width")),),
                outputs=(Tensor("image", "float32", ("batch", 3, f"{f}*height", f"{f}*width")),),
                axes={"batch": image_batch, "height": height, "width": width},
            ),
            VaeDecoder(source.vae, source.scaling_factor, source.shift_factor),
        )
    return out


def _flux_components(
    source: SourceModel, max_batch: int, height: Axis, width: Axis, grid: str | None = None
) -> dict[str, Component]:
    """FLUX-style: no classifier-free guidance, so every batch axis is the image count."""
    assert source.text_encoder is not None and source.vae is not None
    cfg = cast(Any, source.text_encoder).config
    seq, hidden = int(cfg.max_position_embeddings), int(cfg.hidden_size)
    batch = Axis(1, 1, max_batch)
    channels, f = source.latent_channels, source.vae_scale_factor
    latent_dims = ("batch", channels, "height", "width")
    # Packing needs an even latent grid: at least a multiple of 2.
    height = Axis(height.min, height.opt, height.max, max(height.multiple, 2))
    width = Axis(width.min, width.opt, width.max, max(width.multiple, 2))
    return {
        "text_encoder": Component(
            ComponentSpec(
                role="text_encoder",
                inputs=(
                    Tensor("input_ids", "int64", ("batch", seq), ("int", int(cfg.vocab_size))),
                ),
                outputs=(
                    Tensor("last_hidden_state", "float32", ("batch", seq, hidden)),
                    Tensor("pooler_output", "float32", ("batch", hidden)),
                ),
                axes={"batch": batch},
            ),
            TextEncoder(source.text_encoder, pooled=True),
        ),
        "denoiser": Component(
            ComponentSpec(
                role="denoiser",
                inputs=(
                    Tensor("sample", "float32", latent_dims),
                    Tensor("timestep", "float32", ("batch",), "timestep"),
                    Tensor("encoder_hidden_states", "float32", ("batch", seq, hidden)),
                    Tensor("pooled_projections", "float32", ("batch", hidden)),
                ),
                outputs=(Tensor("noise_pred", "float32", latent_dims),),
                axes={"batch": batch, "height": height, "width": width},
            ),
            FluxDenoiser(source.denoiser, grid),
        ),
        "vae_decoder": Component(
            ComponentSpec(
                role="vae_decoder",
                inputs=(Tensor("latent", "float32", latent_dims),),
                outputs=(Tensor("image", "float32", ("batch", 3, f"{f}*height", f"{f}*width")),),
                axes={"batch": batch, "height": height, "width": width},
            ),
            VaeDecoder(source.vae, source.scaling_factor, source.shift_factor),
        ),
    }
