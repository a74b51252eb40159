"""Load a diffusers pipeline folder (or a single-model folder) from disk, offline."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from difforge.artifact.schedulers import choose_sampler
from difforge.errors import DifforgeError
from difforge.sources.base import Resolution, SourceModel
from difforge.sources.tokenizer import check_clip_tokenizer

PIPELINES = {
    "StableDiffusionPipeline": "text-to-image",
    "DiTPipeline": "class-to-image",
    # difforge's pixel-space class-conditional models (models/digits-*): no VAE.
    "DifforgeClassPipeline": "class-to-image",
}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DifforgeError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise DifforgeError(f"{path} does not hold a JSON object")
    return data


def _scheduler(folder: Path, requested: str | None) -> tuple[str, dict[str, Any], str | None]:
    """The runtime sampler for the folder's scheduler: its own, a sound substitute, or the one
    the user names; anything else is refused (sampling an LCM with DDIM gives wrong images)."""
    path = folder / "scheduler" / "scheduler_config.json"
    if not path.is_file():
        raise DifforgeError(f"{folder} has no scheduler/scheduler_config.json")
    config = _read_json(path)
    try:
        return choose_sampler(str(config.get("_class_name", "")), config, requested)
    except DifforgeError as err:
        raise DifforgeError(f"{path}: {err}") from None


@contextlib.contextmanager
def _quiet_loaders() -> Iterator[None]:
    """diffusers and transformers log what difforge says itself (a pickled weight file, in
    particular, is reported as a note): their loggers are set to errors only while loading."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    levels = (diffusers_logging.get_verbosity(), transformers_logging.get_verbosity())
    diffusers_logging.set_verbosity(diffusers_logging.CRITICAL)
    transformers_logging.set_verbosity(transformers_logging.CRITICAL)
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(levels[0])
        transformers_logging.set_verbosity(levels[1])


def _load(cls: Any, folder: Path, what: str) -> Any:
    if not folder.is_dir():
        raise DifforgeError(f"missing {what} folder: {folder}")
    # diffusers' models would warn that `accelerate` is missing; load them the plain way.
    extra = {"low_cpu_mem_usage": False} if cls.__module__.startswith("diffusers") else {}
    try:
        with _quiet_loaders():
            return cls.from_pretrained(str(folder), local_files_only=True, **extra).eval()
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DifforgeError(f"cannot load {what} from {folder}: {first}") from None


def pickled_weights(path: Path) -> list[str]:
    """Notes for the model folders whose weights are pickles (.bin) rather than safetensors."""
    notes = []
    for sub in sorted(p for p in path.iterdir() if p.is_dir()):
        if not any(sub.glob("*.safetensors")) and any(sub.glob("*.bin")):
            notes.append(
                f"{sub.name}: weights are a pickle (.bin), read with torch's weights-only "
                "loader; safetensors is the safer format to ship"
            )
    return notes


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
    meta = _read_json(index)
    cls_name = str(meta.get("_class_name", ""))
    kind = PIPELINES.get(cls_name)
    if kind is None:
        known = ", ".join(sorted(PIPELINES))
        raise DifforgeError(
            f"pipeline {cls_name or '?'} in {path} is not supported (known: {known})"
        )

    if cls_name == "DifforgeClassPipeline":
        return _pixel_class_model(path, meta, scheduler)

    from diffusers import AutoencoderKL

    vae = _load(AutoencoderKL, path / "vae", "vae")
    scale = int(2 ** (len(vae.config.block_out_channels) - 1))
    sched_name, sched_config, note = _scheduler(path, scheduler)
    description = {
        "type": "diffusers",
        "path": str(path.resolve()),
        "pipeline": cls_name,
        "random_weights": False,
    }
    if kind == "text-to-image":
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel

        unet_config = path / "unet" / "config.json"
        cond_dim = (
            _read_json(unet_config).get("time_cond_proj_dim") if unet_config.is_file() else None
        )
        if cond_dim:
            raise DifforgeError(
                f"{path}: its U-Net takes a guidance embedding (time_cond_proj_dim={cond_dim}, "
                "an LCM-distilled student); text-to-image artifacts do not feed one yet, and "
                "without it the images are wrong"
            )
        tok = path / "tokenizer"
        window = check_clip_tokenizer(tok).max_length  # before the weights load: fails fast
        unet = _load(UNet2DConditionModel, path / "unet", "unet")
        text_encoder = _load(CLIPTextModel, path / "text_encoder", "text_encoder")
        positions = int(text_encoder.config.max_position_embeddings)
        if window != positions:
            raise DifforgeError(
                f"{tok}: model_max_length {window} is not the text encoder's "
                f"{positions} positions (difforge exports the text encoder at its full window)"
            )
        factor = scale * 2 ** (len(unet.config.block_out_channels) - 1)
        native = int(unet.config.sample_size) * scale
        return SourceModel(
            name=path.name,
            kind=kind,
            denoiser=unet,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer_dir=tok,
            scheduler_name=sched_name,
            scheduler_config=sched_config,
            scheduler_note=note,
            resolution=Resolution(
                min=max(factor, native // 2), default=native, max=native * 2, multiple=factor
            ),
            description=description,
        )
    from diffusers import DiTTransformer2DModel

    transformer = _load(DiTTransformer2DModel, path / "transformer", "transformer")
    factor = scale * int(transformer.config.patch_size)
    native = int(transformer.config.sample_size) * scale
    return SourceModel(
        name=path.name,
        kind=kind,
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

        denoiser = _load(UNet2DConditionModel, path / "unet", "unet")
        factor = 2 ** (len(denoiser.config.block_out_channels) - 1)
        native = int(denoiser.config.sample_size)
        resolution = Resolution(min=native, default=native, max=native * 2, multiple=factor)
    elif "transformer" in meta:
        from diffusers import DiTTransformer2DModel

        denoiser = _load(DiTTransformer2DModel, path / "transformer", "transformer")
        native = int(denoiser.config.sample_size)
        # diffusers' DiT fixes its position table to sample_size: one resolution.
        resolution = Resolution(
            min=native, default=native, max=native, multiple=int(denoiser.config.patch_size)
        )
    else:
        raise DifforgeError(f"{path / 'model_index.json'} lists neither a unet nor a transformer")
    sched_name, sched_config, note = _scheduler(path, scheduler)
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
