"""Model sources: a diffusers folder on disk, or a built-in preset built from a config with
seeded weights; and the model definitions they build (``backbones``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from difforge.errors import DifforgeError
from difforge.sources.base import Resolution, SourceModel
from difforge.sources.presets import DESCRIPTIONS, PRESETS, load_preset


def load_source(
    preset: str | None = None,
    model: str | Path | None = None,
    seed: int = 0,
    scheduler: str | None = None,
) -> SourceModel:
    """Exactly one of ``preset`` or ``model`` (a diffusers pipeline folder); ``scheduler``
    names the runtime sampler to use instead of the model's own."""
    if (preset is None) == (model is None):
        raise DifforgeError("give exactly one of --preset or --model")
    if preset is not None:
        source = load_preset(preset, seed)
        if scheduler is None:
            return source
        from difforge.artifact.schedulers import choose_sampler

        cls = str(source.scheduler_config.get("_class_name", ""))
        name, config, note = choose_sampler(cls, source.scheduler_config, scheduler)
        return replace(source, scheduler_name=name, scheduler_config=config, scheduler_note=note)
    from difforge.sources.diffusers_folder import load_folder

    return load_folder(Path(model), scheduler)  # type: ignore[arg-type]


__all__ = ["DESCRIPTIONS", "PRESETS", "Resolution", "SourceModel", "load_preset", "load_source"]
