"""One runner interface for every engine.

As in Polygraphy, the public ``infer`` validates the feeds against the component's declared
interface (names, dtypes, ranks, fixed dimensions, symbolic dimensions consistent and inside
the built range) and subclasses write only ``_infer``: the backend call. One comparator and one
pipeline then work across ONNX Runtime, TensorRT and whatever comes next.

A backend's runner (registered with :func:`difforge.runtime.runners.register_runner`) is made
from the artifact alone by :meth:`Runner.from_artifact`: the component's manifest entry (its
engine record holds the backend's settings) and the artifact folder.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from difforge.artifact.dims import split_dim
from difforge.artifact.manifest import ComponentEntry, Manifest
from difforge.errors import DifforgeError

_DTYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "int64": np.int64,
    "int32": np.int32,
    "bool": np.bool_,
}


class Runner(ABC):
    """Runs one component. Loading is lazy: ``activate`` (or the first ``infer``) does it."""

    #: the engine backend this runner runs (set by registered runners)
    backend: ClassVar[str] = ""

    def __init__(self, name: str, spec: ComponentEntry) -> None:
        self.name = name
        self.spec = spec
        self.active = False
        self.load_seconds = 0.0
        #: what the user should know about how this runner runs (settings it adjusted)
        self.notes: list[str] = []
        #: outputs only a later call of this pipeline reads (the step plan's carried state):
        #: a runner may hand them back where its engine left them (on the GPU)
        self.carried_outputs: frozenset[str] = frozenset()

    @classmethod
    def check_artifact(cls, manifest: Manifest) -> None:
        """Refuse, before any session is made, an artifact this runner cannot run here (an
        engine built by a newer library than the one installed, say)."""
        return None

    @classmethod
    def from_artifact(
        cls, name: str, spec: ComponentEntry, root: Path, overrides: dict[str, Any]
    ) -> Runner:
        """The runner for component ``name`` of the artifact at ``root``; ``overrides``
        replace recorded settings (threads, profiling)."""
        raise NotImplementedError(f"{cls.__name__} is not made from artifacts")

    def activate(self) -> None:
        if not self.active:
            start = time.perf_counter()
            self._activate()
            self.load_seconds = time.perf_counter() - start
            self.active = True

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.check_feeds(feeds)
        self.activate()
        return self._infer(feeds)

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        expected = {t.name for t in self.spec.inputs}
        missing = expected - feeds.keys()
        extra = feeds.keys() - expected
        if missing or extra:
            raise DifforgeError(
                f"{self.name}: inputs {sorted(feeds)} do not match {sorted(expected)}"
            )
        bound: dict[str, int] = {}
        for tensor in self.spec.inputs:
            value = feeds[tensor.name]
            want = _DTYPES.get(tensor.dtype)
            if want is not None and value.dtype != want:
                raise DifforgeError(
                    f"{self.name}.{tensor.name}: dtype {value.dtype}, expected {tensor.dtype}"
                )
            if value.ndim != len(tensor.shape):
                raise DifforgeError(
                    f"{self.name}.{tensor.name}: rank {value.ndim}, expected {len(tensor.shape)}"
                )
            for size, dim in zip(value.shape, tensor.shape, strict=True):
                if isinstance(dim, int):
                    if size != dim:
                        raise DifforgeError(
                            f"{self.name}.{tensor.name}: shape {value.shape} does not fit "
                            f"{tensor.shape}"
                        )
                    continue
                axis, divisor = split_dim(dim)
                if bound.setdefault(axis, size * divisor) != size * divisor:
                    raise DifforgeError(
                        f"{self.name}: axis '{axis}' is {bound[axis]} in one input and "
                        f"{size * divisor} in {tensor.name} ({dim} = {size})"
                    )
                self._check_axis(axis, size * divisor)

    def _check_axis(self, axis: str, size: int) -> None:
        limits = self.spec.axes.get(axis)
        if limits is not None and not limits[0] <= size <= limits[2]:
            raise DifforgeError(
                f"{self.name}: {axis} {size} is outside the range this artifact was built for "
                f"[{limits[0]}, {limits[2]}]"
            )
        multiple = self.spec.multiples.get(axis)
        if multiple and size % multiple:
            raise DifforgeError(f"{self.name}: {axis} {size} is not a multiple of {multiple}")

    @abstractmethod
    def _activate(self) -> None:
        """Load the engine (create the session, deserialize the plan)."""

    @abstractmethod
    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the engine on feeds already validated."""
