"""Graph passes on onnx-ir models, registered by name; engines chain the ones they choose.

Each pass is one module here, registered with :func:`register_pass` under the module's name,
so that :func:`get_pass` imports only the pass asked for (onnxscript loads on first use):

- ``fold_constants``: constant folding and dead-code removal
- ``inline_functions``: custom-op bodies inlined, or kept as plugin nodes
- ``ort_fusions``: attention / layer-norm fusion into ONNX Runtime's CPU contrib ops
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any, TypeVar

from difforge.errors import DifforgeError

if TYPE_CHECKING:
    from difforge.passes.base import GraphPass

P = TypeVar("P", bound="type[GraphPass]")

_REGISTRY: dict[str, type[GraphPass]] = {}
_NOT_PASSES = frozenset({"base"})


def register_pass(cls: P) -> P:
    """Class decorator: make a pass available under ``cls.name``."""
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"pass {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def available_passes() -> list[str]:
    """Every pass: those registered, and the modules of this package that define one."""
    found = {
        m.name
        for m in pkgutil.iter_modules(__path__)
        if not m.name.startswith("_") and m.name not in _NOT_PASSES
    }
    return sorted(found | set(_REGISTRY))


def get_pass(name: str, **options: Any) -> GraphPass:
    """A new instance of the pass ``name`` with ``options``."""
    if name not in _REGISTRY and name in available_passes():
        importlib.import_module(f"{__name__}.{name}")
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise DifforgeError(
            f"unknown graph pass {name!r} (known: {', '.join(available_passes())})"
        ) from None
    try:
        return cls(**options)
    except TypeError as err:  # an option the pass does not take
        raise DifforgeError(f"graph pass {name!r}: {err}") from None


__all__ = ["available_passes", "get_pass", "register_pass"]
