"""Autotuning's choice: the fastest candidate, every timing kept, failures skipped."""

import math
from collections.abc import Callable

from difforge.plugins.kernels import pick_fastest


def test_picks_fastest_and_keeps_every_timing() -> None:
    cost = {"a": 3.0, "b": 1.5, "c": 2.0}
    launched: list[str] = []

    def bench(fn: Callable[[], None]) -> float:
        fn()
        return cost[launched[-1]]

    best, times = pick_fastest(["a", "b", "c"], launched.append, bench)
    assert best == "b" and times == cost and launched == ["a", "b", "c"]


def test_failed_candidates_are_inf_and_never_picked() -> None:
    def run(config: str) -> None:
        if config != "ok":
            raise RuntimeError("out of shared memory")

    def bench(fn: Callable[[], None]) -> float:
        fn()
        return 9.0

    best, times = pick_fastest(["too-big", "ok"], run, bench)
    assert best == "ok" and times == {"too-big": math.inf, "ok": 9.0}
    best, times = pick_fastest(["x", "y"], lambda c: run("bad"), bench)
    assert best == "x" and all(math.isinf(t) for t in times.values())
