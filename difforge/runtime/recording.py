"""Recording what a pipeline feeds its components: the source of calibration data.

:func:`recording` wraps each runner of a loaded pipeline so that every validated feed is handed
to a sink with its trajectory and step; the pipeline itself is unchanged, so the recorded
inputs are exactly those the fp32 artifact sees when it generates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from difforge.runtime.pipeline import Pipeline
from difforge.runtime.runners.base import Runner

#: (component key, feeds, trajectory, step)
Sink = Callable[[str, dict[str, np.ndarray], int, int], None]


class _Recording(Runner):
    """Hands each feed to the recorder, then runs the wrapped runner."""

    def __init__(self, inner: Runner, recorder: Recorder) -> None:
        super().__init__(inner.name, inner.spec)
        self.inner = inner
        self.recorder = recorder
        self.backend = inner.backend  # type: ignore[misc]

    def _activate(self) -> None:
        self.inner.activate()

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.recorder.record(self.name, feeds)
        return self.inner._infer(feeds)


class Recorder:
    """Tracks the trajectory and step as the pipeline runs; used through :func:`recording`.

    A feed's step is the number of sampling steps finished when it was made: the denoiser
    calls of step ``i`` carry ``i``; the text encoder carries 0 and the decoder the step count.
    """

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.trajectory = 0
        self.step = 0

    def record(self, key: str, feeds: dict[str, np.ndarray]) -> None:
        """One record per step: a batched call serving several steps (its ``timestep`` holds
        one run of equal values per step, each step's rows together) is split into them."""
        t = feeds.get("timestep")
        runs = 1 if t is None or t.ndim != 1 else 1 + int(np.count_nonzero(np.diff(t)))
        if runs == 1:
            self.sink(key, feeds, self.trajectory, self.step)
            return
        parts = {k: np.split(v, runs) for k, v in feeds.items()}
        for j in range(runs):
            self.sink(key, {k: v[j] for k, v in parts.items()}, self.trajectory, self.step + j)

    def start(self, trajectory: int) -> None:
        """A new image (or call of images) begins."""
        self.trajectory, self.step = trajectory, 0

    def on_step(self, done: int, total: int) -> None:
        """The pipeline's step callback."""
        self.step = done


@contextmanager
def recording(pipeline: Pipeline, sink: Sink) -> Iterator[Recorder]:
    """Within the block, every feed of every component goes to ``sink`` as well."""
    recorder = Recorder(sink)
    original = dict(pipeline.runners)
    try:
        for key, runner in original.items():
            pipeline.runners[key] = _Recording(runner, recorder)
        yield recorder
    finally:
        pipeline.runners.clear()
        pipeline.runners.update(original)
