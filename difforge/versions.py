"""Versions of the libraries an artifact was made with, for its manifest."""

from __future__ import annotations

import contextlib
import platform
from importlib import metadata

from difforge._version import __version__

_PACKAGES = ("torch", "onnx", "onnxscript", "onnx-ir", "onnxruntime", "diffusers", "transformers")


def library_versions() -> dict[str, str]:
    out = {"difforge": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    if "onnxruntime" not in out:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out["onnxruntime"] = metadata.version("onnxruntime-gpu")
    return out
