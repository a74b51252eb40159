"""Compiled digits reference models, each compiled once per test session and shared by every
test module that uses it (tests/reference/test_digits_artifacts.py, tests/runtime/
test_isolation.py). Nothing may write into a shared artifact: copy it first."""

from __future__ import annotations

from pathlib import Path

import pytest

from difforge.reference.folders import MODELS_DIR

_COMPILED: dict[str, Path] = {}


def compile_digits(out: Path, model: str, patches: list[str] | None = None) -> Path:
    """Compile ``models/<model>`` (images per call up to 4) to ``out``."""
    from difforge import CompileConfig, ExportConfig, compile

    config = ExportConfig(
        output=out, model=MODELS_DIR / model, patches=patches or [], max_batch=4
    )
    return compile(CompileConfig(export=config))


def shared_digits_artifact(factory: pytest.TempPathFactory, model: str) -> Path:
    """``models/<model>`` compiled by :func:`compile_digits`, once per session."""
    if model not in _COMPILED:
        _COMPILED[model] = compile_digits(factory.mktemp(model) / "a", model)
    return _COMPILED[model]
