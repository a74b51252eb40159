"""Load a diffusers pipeline folder from disk, offline: the pipeline class in its
model_index.json picks the loader (text pipelines in :mod:`difforge.sources.text_folders`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from difforge.errors import DifforgeError
from difforge.sources.base import Resolution, SourceModel
from difforge.sources.folder_io import folder_scheduler, load_module, pickled_weights, read_json
from difforge.sources.text_folders import RECTIFIED_FLOW, flux_folder, text_unet_folder

#: the pipeline classes difforge compiles, and what each makes
PIPELINES = {
    "StableDiffusionPipeline": "text-to-image",
    "LatentConsistencyModelPipeline": "text-to-image",
    RECTIFIED_FLOW: "text-to-image",
    "StableDiffusionXLPipeline": "sdxl",
    "FluxPipeline": "flux",
    "DiTPipeline": "class-to-image",
    # difforge's pixel-space class-conditional models (models/digits-*): no VAE.
    "DifforgeClassPipeline": "class-to-image",
}

__all__ = ["PIPELINES", "load_folder", "pickled_weights"]


def load_folder(path: Path, scheduler: str | None = None) -> SourceModel:
    """The pipeline folder at ``path``; ``scheduler`` names the runtime sampler to use instead
    of the folder's own (required when the runtime does not implement the folder's)."""
    source = _load_folder(path, scheduler)
    source.notes.extend(pickled_weights(path))
    return source


def _load_folder(path: Path, scheduler: str | None) -> SourceModel:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not path.exists():
        raise DifforgeError(f"model path does not exist: {path}")
    if not path.is_dir():
        raise DifforgeError(f"model path is not a folder: {path}")
    index = path / "model_index.json"
    if not index.is_file():
        if (path / "config.json").is_file():
            raise DifforgeError(
                f"{path} is a single-model folder; export needs a pipeline folder with "
                "model_index.json (denoiser, VAE and, for text-to-image, text encoder)"
            )
        raise DifforgeError(f"{path} is not a diffusers folder (no model_index.json)")
    meta = read_json(index)
    cls_name = str(meta.get("_class_name", ""))
    kind = PIPELINES.get(cls_name)
    if kind is None:
        known = ", ".join(sorted(PIPELINES))
        raise DifforgeError(
            f"pipeline {cls_name or '?'} in {path} is not supported (known: {known})"
        )

    if cls_name == "DifforgeClassPipeline":
        return _pixel_class_model(path, meta, scheduler)
    if kind in ("text-to-image", "sdxl"):
        return text_unet_folder(path, meta, cls_name, scheduler)
    if kind == "flux":
        return flux_folder(path, meta, scheduler)
    return _dit(path, scheduler)


def _dit(path: Path, scheduler: str | None) -> SourceModel:
    from diffusers import AutoencoderKL, DiTTransformer2DModel

    vae = load_module(AutoencoderKL, path / "vae", "vae")
    scale = int(2 ** (len(vae.config.block_out_channels) - 1))
    sched_name, sched_config, note = folder_scheduler(path, scheduler)
    description = {
        "type": "diffusers",
        "path": str(path.resolve()),
        "pipeline": "DiTPipeline",
        "random_weights": False,
    }
    transformer = load_module(DiTTransformer2DModel, path / "transformer", "transformer")
    factor = scale * int(transformer.config.patch_size)
    native = int(transformer.config.sample_size) * scale
    return SourceModel(
        name=path.name,
        kind="class-to-image",
        denoiser=transformer,
        vae=vae,
        text_encoder=None,
        tokenizer_dir=None,
        scheduler_name=sched_name,
        scheduler_config=sched_config,
        scheduler_note=note,
        resolution=Resolution(min=native, default=native, max=native, multiple=factor),
        description=description,
        default_guidance=4.0,
        num_classes=int(transformer.config.num_embeds_ada_norm or 1000),
        null_class=int(transformer.config.num_embeds_ada_norm or 1000),
    )


def _pixel_class_model(path: Path, meta: dict[str, Any], scheduler: str | None) -> SourceModel:
    """A pixel-space class-conditional U-Net or DiT (difforge's digits reference models)."""
    settings: dict[str, Any] = meta.get("difforge") or {}
    if not isinstance(settings, dict) or "num_classes" not in settings:
        raise DifforgeError(f"{path / 'model_index.json'} has no 'difforge' settings block")
    if "unet" in meta:
        from diffusers import UNet2DConditionModel

        denoiser = load_module(UNet2DConditionModel, path / "unet", "unet")
        factor = 2 ** (len(denoiser.config.block_out_channels) - 1)
        native = int(denoiser.config.sample_size)
        resolution = Resolution(min=native, default=native, max=native * 2, multiple=factor)
    elif "transformer" in meta:
        from diffusers import DiTTransformer2DModel

        denoiser = load_module(DiTTransformer2DModel, path / "transformer", "transformer")
        native = int(denoiser.config.sample_size)
        # diffusers' DiT fixes its position table to sample_size: one resolution.
        resolution = Resolution(
            min=native, default=native, max=native, multiple=int(denoiser.config.patch_size)
        )
    else:
        raise DifforgeError(f"{path / 'model_index.json'} lists neither a unet nor a transformer")
    sched_name, sched_config, note = folder_scheduler(path, scheduler)
    return SourceModel(
        name=path.name,
        kind="class-to-image",
        denoiser=denoiser,
        vae=None,
        text_encoder=None,
        tokenizer_dir=None,
        scheduler_name=sched_name,
        scheduler_config=sched_config,
        scheduler_note=note,
        resolution=resolution,
        description={
            "type": "diffusers",
            "path": str(path.resolve()),
            "pipeline": "DifforgeClassPipeline",
            "random_weights": False,
            "reference": settings.get("reference"),
        },
        default_steps=int(settings.get("default_steps", 50)),
        default_guidance=float(settings.get("default_guidance", 1.0)),
        num_classes=int(settings["num_classes"]),
        null_class=int(settings.get("null_class", settings["num_classes"])),
        extras={"guidance_input": bool(settings.get("guidance_input"))},
    )
