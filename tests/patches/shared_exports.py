"""One export per distinct unpatched component across the patched-pipeline cases.

Patches touch only the denoiser, yet every case compiles its preset's text encoder and VAE
decoder again. The same module (architecture, settings, weights), spec and opset export to
the same bytes (tests/exporter/test_reproducible.py), so the first export of each is kept and
copied for the cases after it. The denoiser, and anything whose fingerprint differs, is
exported as before. (Imported by the test modules of this folder; pytest puts it on sys.path.)
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

import difforge.exporter.export as export_stage
from difforge.exporter.components import Component
from difforge.exporter.onnx_export import DEFAULT_OPSET

#: components that no patch changes
SHARED_ROLES = ("text_encoder", "vae_decoder")


def fingerprint(component: Component, opset: int) -> str:
    """What the exported bytes depend on: the spec, the opset, every submodule's type, settings
    and config, and every parameter and buffer."""
    digest = hashlib.sha256()

    def add(*parts: object) -> None:
        for part in parts:
            digest.update(_describe(part).encode())
            digest.update(b"\0")

    root = component.module
    add(component.spec, opset, torch.__version__)
    for name, module in root.named_modules():
        settings = {k: v for k, v in vars(module).items() if not k.startswith("_")}
        add(name, type(module).__module__, type(module).__qualname__, settings)
        add(getattr(module, "config", None), module.extra_repr())
    tensors = {**dict(root.named_parameters()), **dict(root.named_buffers())}
    for name, tensor in sorted(tensors.items()):
        data = tensor.detach().contiguous().cpu()
        add(name, data.dtype, tuple(data.shape))
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def _describe(value: object, depth: int = 0) -> str:
    """repr without memory addresses: a function by its name, an object known only by its
    address (an attention processor, say) by its type and attributes."""
    text = repr(value)
    if " at 0x" not in text:
        return text
    if depth > 4:
        raise ValueError(f"cannot fingerprint {text}")
    if isinstance(value, dict):
        return repr({k: _describe(v, depth + 1) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return repr([_describe(v, depth + 1) for v in value])
    if hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    return kind + _describe(getattr(value, "__dict__", {}), depth + 1)


@contextmanager
def shared_unpatched_exports(store: Path) -> Iterator[dict[str, int]]:
    """Within the block, ``export`` exports each distinct text encoder / VAE decoder once; the
    yielded counts say how many graphs were exported and how many copied."""
    real = export_stage.export_component
    done: dict[str, Path] = {}
    counts = {"exported": 0, "copied": 0}

    def export_component(
        component: Component,
        path: Path,
        opset: int = DEFAULT_OPSET,
        extra_kwargs: dict[str, Any] | None = None,
    ) -> Path:
        if component.spec.role not in SHARED_ROLES or extra_kwargs:
            return real(component, path, opset, extra_kwargs)
        key = f"{fingerprint(component, opset)}/{path.name}"
        if key not in done:
            folder = store / f"{len(done)}-{component.spec.role}"
            folder.mkdir(parents=True, exist_ok=True)
            done[key] = real(component, folder / path.name, opset)
            counts["exported"] += 1
        else:
            counts["copied"] += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        for file in done[key].parent.iterdir():  # the graph, and external data if any
            shutil.copyfile(file, path.parent / file.name)
        return path

    export_stage.export_component = export_component
    try:
        yield counts
    finally:
        export_stage.export_component = real
