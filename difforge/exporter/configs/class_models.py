"""Class-conditional denoisers: diffusers' DiT (latent, with a VAE) and difforge's
pixel-space class U-Nets and DiTs (the digits reference models). A guidance-distilled student
takes the scale as an input instead of classifier-free guidance's doubled batch."""

from __future__ import annotations

from difforge.exporter.configs.common import (
    TIMESTEP,
    BuildRequest,
    Component,
    vae_decoder,
)
from difforge.exporter.specs import Axis, ComponentSpec, Tensor
from difforge.exporter.wrappers import ClassUNetDenoiser, DiTDenoiser


def class_to_image(req: BuildRequest) -> dict[str, Component]:
    source = req.source
    height, width = req.latent_axes()
    is_unet = type(source.denoiser).__name__ == "UNet2DConditionModel"
    guidance_input = bool(source.extras.get("guidance_input"))
    # A guidance-distilled student takes the scale as an input: no CFG doubling.
    batch = req.image_batch if guidance_input else req.cfg_batch
    guidance = (Tensor("guidance", "float32", ("batch",), ("uniform", 1.0, 4.0)),)
    latent = ("batch", source.latent_channels, "height", "width")
    out = {
        "denoiser": Component(
            ComponentSpec(
                role="denoiser",
                inputs=(
                    Tensor("sample", "float32", latent),
                    TIMESTEP,
                    Tensor("class_labels", "int64", ("batch",), ("int", source.num_classes + 1)),
                    *(guidance if guidance_input else ()),
                ),
                outputs=(Tensor("noise_pred", "float32", latent),),
                axes={"batch": batch, "height": height, "width": width},
            ),
            ClassUNetDenoiser(source.denoiser) if is_unet else DiTDenoiser(source.denoiser),
        )
    }
    if source.vae is not None:
        out["vae_decoder"] = vae_decoder(req, height, width, Axis(1, 1, req.max_batch))
    return out
