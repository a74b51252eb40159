"""Per-step input tables, computed the same way at export and at run time (numpy only).

A patch that needs a per-step value inside the graph (MSW-MSA's window shift) names a
generator here and a seed; the manifest stores both, and the runtime rebuilds the table for
whatever step count the user asks for. Nothing random happens inside a graph.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from difforge.errors import DifforgeError


def msw_msa_shift(num_steps: int, seed: int) -> list[int]:
    """Quarter-window shift index k ∈ {0, 1, 2, 3} per step, each with probability ¼.

    HiDiffusion draws ``torch.rand(1)`` on every call and thresholds it at ¼, ½, ¾; here the
    draw is an explicit, seeded table so that export, runtime and PyTorch agree.
    """
    if num_steps < 0:
        raise DifforgeError(f"step table: num_steps must be >= 0, got {num_steps}")
    draws = np.random.default_rng(int(seed)).random(num_steps)
    return [int(k) for k in np.searchsorted([0.25, 0.5, 0.75], draws, side="left")]


GENERATORS: dict[str, Callable[[int, int], list[int]]] = {"msw-msa-shift": msw_msa_shift}


def step_table(generator: str, num_steps: int, seed: int) -> list[int]:
    try:
        fn = GENERATORS[generator]
    except KeyError:
        raise DifforgeError(
            f"artifact needs step table '{generator}', which this runtime does not know; "
            "upgrade difforge"
        ) from None
    return fn(num_steps, seed)
