"""Engine builders, registered by backend name and imported only when asked for.

A backend is one package here named after it (``ort/`` builds ``"ort"`` engines) whose
``builder.py`` holds an :class:`~difforge.engines.base.EngineBuilder` subclass decorated with
:func:`register_builder`; its runner is one module in :mod:`difforge.runtime.runners`. Adding a
backend adds those two files and edits nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, TypeVar

from difforge.errors import DifforgeError

if TYPE_CHECKING:
    from difforge.engines.base import EngineBuilder

B = TypeVar("B", bound="type[EngineBuilder]")

_REGISTRY: dict[str, type[EngineBuilder]] = {}


def register_builder(cls: B) -> B:
    """Class decorator: ``cls`` builds engines of backend ``cls.backend``."""
    existing = _REGISTRY.get(cls.backend)
    if not cls.backend or (existing is not None and existing is not cls):
        raise ValueError(f"builder {cls.backend!r} is missing a name or registered twice")
    _REGISTRY[cls.backend] = cls
    return cls


def available_backends() -> list[str]:
    """Every backend with a builder package here, and any registered from elsewhere."""
    found = {m.name.replace("_", "-") for m in pkgutil.iter_modules(__path__) if m.ispkg}
    return sorted(found | set(_REGISTRY))


def builder_class(backend: str) -> type[EngineBuilder]:
    """The builder for ``backend``, importing its package on first use."""
    if backend not in _REGISTRY and backend in available_backends():
        importlib.import_module(f"{__name__}.{backend.replace('-', '_')}.builder")
    try:
        return _REGISTRY[backend]
    except KeyError:
        known = ", ".join(available_backends())
        raise DifforgeError(f"unknown backend '{backend}' (known: {known})") from None


__all__ = ["available_backends", "builder_class", "register_builder"]
