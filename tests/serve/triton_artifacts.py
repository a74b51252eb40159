"""Artifacts and repositories the Triton tests share: the digits U-Net (compiled once per
session, shared with other test modules) and the same model under DeepCache (two graphs of
one component, sharing one weight file), each exported to a repository once per session.
Nothing may write into them: copy first."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.digits_artifacts import compile_digits, shared_digits_artifact

_CACHE: dict[str, Path] = {}


def digits_artifact(factory: pytest.TempPathFactory) -> Path:
    return shared_digits_artifact(factory, "digits-unet")


def deepcache_artifact(factory: pytest.TempPathFactory) -> Path:
    """digits-unet with DeepCache at interval 3: ``denoiser`` and ``denoiser@shallow``."""
    if "deepcache" not in _CACHE:
        out = factory.mktemp("digits-deepcache") / "a"
        _CACHE["deepcache"] = compile_digits(out, "digits-unet", ["deepcache:interval=3"])
    return _CACHE["deepcache"]


def repository(factory: pytest.TempPathFactory, artifact: Path) -> Path:
    """``artifact`` exported to a Triton repository, once per session."""
    from difforge.serve.triton.repository import export_triton

    key = f"repo:{artifact}"
    if key not in _CACHE:
        out = factory.mktemp("triton-repo") / "repo"
        _CACHE[key] = export_triton(artifact, out).output
    return _CACHE[key]
