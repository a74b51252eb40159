"""Per-step input tables, registered by name and computed the same way at export and run time.

A patch that needs a per-step value inside its graph (MSW-MSA's window shift) declares the
input with a table kind from this registry, its parameters and a seed; the manifest stores all
three, and the runtime rebuilds the table for whatever step count a request asks for. The
runtime knows table kinds, never patches, and nothing random happens inside a graph.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from difforge.errors import DifforgeError

#: (num_steps, seed, params) -> one value per step
TableFn = Callable[[int, int, Mapping[str, Any]], list[int]]

_TABLES: dict[str, TableFn] = {}


def register_table(name: str) -> Callable[[TableFn], TableFn]:
    """Decorator: make a table generator available to manifests under ``name``."""

    def add(fn: TableFn) -> TableFn:
        if name in _TABLES and _TABLES[name] is not fn:
            raise ValueError(f"step table {name!r} is registered twice")
        _TABLES[name] = fn
        return fn

    return add


def available_tables() -> list[str]:
    return sorted(_TABLES)


@register_table("categorical")
def categorical(num_steps: int, seed: int, params: Mapping[str, Any]) -> list[int]:
    """Category k per step: a uniform draw u in [0, 1) falls in bin k of the sorted
    ``thresholds`` (k = number of thresholds below u). ``thresholds=[0.25, 0.5, 0.75]`` gives
    k in {0, 1, 2, 3} with probability 1/4 each. A longer table extends a shorter one with the
    same seed; it never reshuffles it."""
    thresholds = params.get("thresholds")
    if (
        not isinstance(thresholds, list)
        or not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in thresholds)
        or thresholds != sorted(thresholds)
    ):
        raise DifforgeError("step table 'categorical' needs sorted numeric 'thresholds'")
    draws = np.random.default_rng(int(seed)).random(num_steps)
    return [int(k) for k in np.searchsorted(thresholds, draws, side="left")]


def step_table(name: str, num_steps: int, seed: int, params: Mapping[str, Any]) -> list[int]:
    """The table ``name`` for ``num_steps`` steps."""
    if num_steps < 0:
        raise DifforgeError(f"step table: num_steps must be >= 0, got {num_steps}")
    try:
        fn = _TABLES[name]
    except KeyError:
        raise DifforgeError(
            f"the artifact needs step table {name!r}, which this difforge does not know "
            f"(known: {', '.join(available_tables())}); upgrade difforge"
        ) from None
    return fn(num_steps, seed, params)
