"""Reading a diffusers folder's parts offline: JSON files, its scheduler, its models."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from difforge.artifact.schedulers import choose_sampler
from difforge.errors import DifforgeError


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DifforgeError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise DifforgeError(f"{path} does not hold a JSON object")
    return data


def folder_scheduler(
    folder: Path, requested: str | None
) -> tuple[str, dict[str, Any], str | None]:
    """The runtime sampler for the folder's scheduler: its own, a sound substitute, or the one
    the user names; anything else is refused (sampling an LCM with DDIM gives wrong images)."""
    path = folder / "scheduler" / "scheduler_config.json"
    if not path.is_file():
        raise DifforgeError(f"{folder} has no scheduler/scheduler_config.json")
    config = read_json(path)
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


def load_module(cls: Any, folder: Path, what: str) -> Any:
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


def load_text_encoder(path: Path, meta: dict[str, Any], name: str, expected: str) -> Any:
    """The text encoder ``name`` of the folder, which model_index.json must list as the
    transformers class its pipeline takes (``expected``): CLIP's, its projected variant, or
    T5's encoder."""
    listed = meta.get(name)
    cls_name = listed[1] if isinstance(listed, list) and len(listed) == 2 else None
    if cls_name != expected:
        raise DifforgeError(
            f"{path / 'model_index.json'}: {name} is {cls_name or 'not listed'}; this "
            f"pipeline takes a {expected}"
        )
    import transformers

    return load_module(getattr(transformers, expected), path / name, name)
