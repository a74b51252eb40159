"""Runners by engine backend, imported only when an artifact needs them.

A backend's runner is one module here named after the backend (``ort.py`` runs ``"ort"``
engines) whose class is decorated with :func:`register_runner`; :func:`runner_class` imports
that module on first use. Adding a backend adds one file and edits nothing here; a helper
module of a runner starts with an underscore (``_ort_settings.py``).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, TypeVar

from difforge.errors import DifforgeError

if TYPE_CHECKING:
    from difforge.runtime.runners.base import Runner

R = TypeVar("R", bound="type[Runner]")

_REGISTRY: dict[str, type[Runner]] = {}
_NOT_RUNNERS = frozenset({"base"})


def register_runner(cls: R) -> R:
    """Class decorator: ``cls`` runs engines of backend ``cls.backend``."""
    existing = _REGISTRY.get(cls.backend)
    if not cls.backend or (existing is not None and existing is not cls):
        raise ValueError(f"runner {cls.backend!r} is missing a backend name or registered twice")
    _REGISTRY[cls.backend] = cls
    return cls


def _module(backend: str) -> str:
    return backend.replace("-", "_")


def available_runners() -> list[str]:
    """Backends this runtime can run: the registered ones and the modules that define one."""
    found = {
        m.name.replace("_", "-")
        for m in pkgutil.iter_modules(__path__)
        if not m.name.startswith("_") and m.name not in _NOT_RUNNERS
    }
    return sorted(found | set(_REGISTRY))


def runner_class(backend: str) -> type[Runner]:
    """The runner class for ``backend``, importing its module on first use."""
    if backend not in _REGISTRY and backend in available_runners():
        importlib.import_module(f"{__name__}.{_module(backend)}")
    try:
        return _REGISTRY[backend]
    except KeyError:
        raise DifforgeError(
            f"this difforge has no runner for '{backend}' engines "
            f"(it runs: {', '.join(available_runners())})"
        ) from None


__all__ = ["available_runners", "register_runner", "runner_class"]
