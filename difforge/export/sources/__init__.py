"""Model sources: a diffusers folder on disk, or a built-in preset."""

from __future__ import annotations

from pathlib import Path

from difforge.errors import DifforgeError
from difforge.export.sources.base import Resolution, SourceModel
from difforge.export.sources.presets import DESCRIPTIONS, PRESETS, load_preset


def load_source(
    preset: str | None = None, model: str | Path | None = None, seed: int = 0
) -> SourceModel:
    """Exactly one of ``preset`` or ``model`` (a diffusers pipeline folder)."""
    if (preset is None) == (model is None):
        raise DifforgeError("give exactly one of --preset or --model")
    if preset is not None:
        return load_preset(preset, seed)
    from difforge.export.sources.diffusers_folder import load_folder

    return load_folder(Path(model))  # type: ignore[arg-type]


__all__ = ["DESCRIPTIONS", "PRESETS", "Resolution", "SourceModel", "load_preset", "load_source"]
