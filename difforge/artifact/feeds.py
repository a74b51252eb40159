"""Sample inputs for a component, from its manifest entry alone (engine checks, profiling)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from difforge.artifact.dims import shape_of
from difforge.artifact.manifest import ComponentEntry
from difforge.errors import DifforgeError

PROFILES = ("min", "opt", "max")


def sample_feeds(
    entry: ComponentEntry,
    which: str = "opt",
    seed: int = 0,
    sizes: Mapping[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Random inputs at one of the component's profile shapes (``min``, ``opt``, ``max``), with
    the axes in ``sizes`` set as given: integers in [0, 10) for int64 inputs, timesteps in
    [0, 999), normal floats otherwise. An index input over the ``active`` axis (RAS's chosen
    tokens) gets distinct ascending indices per row, as the runtime feeds it (fewer active
    tokens than tokens, so ``0 .. active-1`` is always a valid choice)."""
    unknown = set(sizes or {}) - set(entry.axes)
    if unknown:
        raise DifforgeError(f"{entry.role} has no axis {', '.join(sorted(unknown))}")
    rng = np.random.default_rng(seed)
    index = PROFILES.index(which)
    chosen = {axis: values[index] for axis, values in entry.axes.items()} | dict(sizes or {})
    feeds: dict[str, np.ndarray] = {}
    for tensor in entry.inputs:
        shape = shape_of(tensor.shape, chosen)
        if tensor.dtype == "int64" and list(tensor.shape[1:]) == ["active"]:
            rows = [np.sort(rng.permutation(shape[1])) for _ in range(shape[0])]
            feeds[tensor.name] = np.stack(rows).astype(np.int64)
        elif tensor.dtype == "int64":
            feeds[tensor.name] = rng.integers(0, 10, size=shape, dtype=np.int64)
        elif tensor.name == "timestep":
            feeds[tensor.name] = (rng.random(shape) * 999).astype(np.float32)
        else:
            feeds[tensor.name] = rng.standard_normal(shape, dtype=np.float32)
    return feeds
