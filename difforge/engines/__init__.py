"""Engine builders, by backend name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from difforge._progress import Reporter
from difforge.config import BuildConfig
from difforge.errors import DifforgeError

Builder = Callable[[BuildConfig, "Reporter | None"], Path]


def _ort(config: BuildConfig, reporter: Reporter | None) -> Path:
    from difforge.engines.ort.builder import build_ort

    return build_ort(config, reporter)


BACKENDS: dict[str, Builder] = {"ort": _ort}


def get_builder(backend: str) -> Builder:
    try:
        return BACKENDS[backend]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise DifforgeError(f"unknown backend '{backend}' (known: {known})") from None
