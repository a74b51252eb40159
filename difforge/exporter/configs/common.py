"""What every pipeline kind's component configs share: the request they are built from, the
latent axes, and the text-encoder and VAE-decoder components."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import torch

from difforge.exporter.specs import Axis, ComponentSpec, Tensor
from difforge.exporter.wrappers import TextEncoder, VaeDecoder
from difforge.sources.base import SourceModel


@dataclass
class Component:
    spec: ComponentSpec
    module: torch.nn.Module


@dataclass
class BuildRequest:
    """A source, the largest image batch, patches' extra inputs and wrapper options."""

    source: SourceModel
    max_batch: int
    extra_inputs: list[Any] = field(default_factory=list)
    wrapper_options: dict[str, Any] = field(default_factory=dict)

    @property
    def cfg_batch(self) -> Axis:
        """The denoiser's batch under classifier-free guidance: up to twice the images."""
        return Axis(1, 2, 2 * self.max_batch)

    @property
    def image_batch(self) -> Axis:
        return Axis(1, 1, self.max_batch)

    def latent_axes(self, multiple: int = 1) -> tuple[Axis, Axis]:
        """Latent height and width from the source's pixel range (``multiple``: at least)."""
        res = self.source.resolution
        f = self.source.vae_scale_factor
        m = max(res.multiple // f, multiple)
        axis = Axis(min=res.min // f, opt=res.default // f, max=res.max // f, multiple=m)
        return axis, axis

    def extra_tensors(self) -> tuple[Tensor, ...]:
        return tuple(
            Tensor(e.name, e.dtype, tuple(e.shape), ("int", 4) if e.dtype == "int64" else "normal")
            for e in self.extra_inputs
        )


#: how sample inputs of a guidance-scale input are drawn
GUIDANCE = Tensor("guidance", "float32", ("batch",), ("uniform", 1.0, 8.0))
TIMESTEP = Tensor("timestep", "float32", ("batch",), "timestep")


def text_encoder(
    model: torch.nn.Module,
    batch: Axis,
    outputs: tuple[tuple[str, str], ...],
    window: int | None = None,
) -> Component:
    """A text encoder over a fixed token window (``window``, else CLIP's position count);
    ``outputs`` pairs each graph output's name with what it is (:class:`TextEncoder`'s "last",
    "penultimate" or "pooled")."""
    cfg = cast(Any, model).config
    seq = int(window or cfg.max_position_embeddings)  # T5 has no positions: a window is given
    hidden = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "d_model", 0))
    pooled_dim = int(getattr(cfg, "projection_dim", 0) or hidden)
    projected = type(model).__name__ == "CLIPTextModelWithProjection"
    dims: dict[str, tuple[int | str, ...]] = {
        "last": ("batch", seq, hidden),
        "penultimate": ("batch", seq, hidden),
        "pooled": ("batch", pooled_dim if projected else hidden),
    }
    return Component(
        ComponentSpec(
            role="text_encoder",
            inputs=(Tensor("input_ids", "int64", ("batch", seq), ("int", int(cfg.vocab_size))),),
            outputs=tuple(Tensor(name, "float32", dims[kind]) for name, kind in outputs),
            axes={"batch": batch},
        ),
        TextEncoder(model, tuple(kind for _, kind in outputs)),
    )


def vae_decoder(
    req: BuildRequest, height: Axis, width: Axis, batch: Axis | None = None
) -> Component:
    source = req.source
    channels, f = source.latent_channels, source.vae_scale_factor
    assert source.vae is not None
    return Component(
        ComponentSpec(
            role="vae_decoder",
            inputs=(Tensor("latent", "float32", ("batch", channels, "height", "width")),),
            outputs=(Tensor("image", "float32", ("batch", 3, f"{f}*height", f"{f}*width")),),
            axes={"batch": batch or req.image_batch, "height": height, "width": width},
            # The output is an image, quantised to 255 levels over [-1, 1] (7.8e-3 a level):
            # 1e-3 of its largest magnitude is an eighth of a level or less. A 1024 px decode
            # (some 30 convolutions and group norms over 1M pixels) differs between ONNX
            # Runtime's and PyTorch's convolution algorithms by 1.6e-4, over the 1e-4 the
            # other components keep.
            tolerance=1e-3,
        ),
        VaeDecoder(source.vae, source.scaling_factor, source.shift_factor),
    )
