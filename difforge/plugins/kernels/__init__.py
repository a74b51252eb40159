"""Triton kernels for the difforge ops.

Nothing here imports triton at module level: triton is optional, and the kernel modules
(:mod:`.local_attention`, :mod:`.depthwise_conv`) are imported only when a kernel runs.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """True when triton imports (checked once, on first use, never at package import)."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton  # noqa: F401
    except Exception:  # a broken install means "no kernels", not a crash
        return False
    return True


def interpreting() -> bool:
    """True when triton runs kernels on the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def autotune_enabled() -> bool:
    """Whether the launchers time a few tile shapes on the first call per input shape.

    On by default; ``DIFFORGE_TRITON_AUTOTUNE=0`` turns it off (use the default tiles), e.g.
    while capturing CUDA graphs, where timing runs are not allowed.
    """
    return os.environ.get("DIFFORGE_TRITON_AUTOTUNE", "1") not in ("", "0")


def pick_fastest(
    candidates: Sequence[T],
    run: Callable[[T], None],
    bench: Callable[[Callable[[], None]], float] | None = None,
) -> tuple[T, dict[T, float]]:
    """Time each candidate config and return the fastest with every timing (ms).

    ``bench`` defaults to ``triton.testing.do_bench`` (CUDA). A candidate that fails (does
    not compile: registers, shared memory) is timed as ``inf`` and skipped; if all fail, the
    first is returned so that the caller's own launch reports the error.
    """
    if bench is None:
        from triton.testing import do_bench

        def bench(fn: Callable[[], None]) -> float:
            return float(do_bench(fn, warmup=5, rep=20))

    times: dict[T, float] = {}
    for config in candidates:
        try:
            times[config] = bench(lambda c=config: run(c))  # type: ignore[misc]
        except Exception:
            times[config] = math.inf
    best = min(candidates, key=lambda c: times[c])
    return best, times
