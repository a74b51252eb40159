"""TensorRT runner: a component's serialized engine run through Polygraphy's ``TrtRunner``.

Every TensorRT call goes through :class:`TrtCalls` (the ``tensorrt`` module's version and
Polygraphy's ``EngineFromBytes`` and ``TrtRunner``), typed by the protocols below and swapped
for recording fakes in the tests: TensorRT cannot be installed on the machines difforge is
developed on, so these calls are checked for what they are asked, not run. Polygraphy's runner
is NVIDIA's, tested against real TensorRT, and manages the buffers, the input shapes and the
copies; it imports no torch.

Before any engine is loaded the artifact is checked against this machine: an engine built by
another TensorRT version or for another GPU (compute capability) is refused in one line. Each
call picks the optimization profile whose resolution bucket holds its inputs' size (the build
made one per bucket, in the order the engine record lists them).

Not here yet, and not verifiable without a GPU: device-resident latents between steps and a
CUDA graph per shape bucket; outputs are copied to the host after every call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from difforge.artifact.dims import split_dim
from difforge.artifact.engine_fit import Device, check_engine_fits, device
from difforge.artifact.files import check_relative, inside
from difforge.artifact.manifest import ComponentEntry, Manifest
from difforge.errors import DifforgeError
from difforge.runtime.runners import register_runner
from difforge.runtime.runners.base import Runner


class PolyRunner(Protocol):
    """What difforge calls of a Polygraphy ``TrtRunner``."""

    def activate(self) -> None: ...

    def set_profile(self, index: int) -> None: ...

    def infer(self, feed_dict: dict[str, Any]) -> dict[str, Any]: ...


class PolyTrt(Protocol):
    """What difforge calls of ``polygraphy.backend.trt``."""

    def EngineFromBytes(self, serialized_engine: bytes) -> Callable[[], Any]: ...

    def TrtRunner(self, engine: Any) -> PolyRunner: ...


@dataclass(frozen=True)
class TrtCalls:
    version: str
    polygraphy: PolyTrt
    gpu: Device


def trt_calls() -> TrtCalls:
    """The installed TensorRT, Polygraphy's TensorRT backend and GPU 0, or one line saying
    what is missing."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise DifforgeError(
            "this artifact's engines are TensorRT's, and TensorRT's Python module is not "
            f"importable here ({exc}); install it from NVIDIA's index on the machine the engines "
            "were built for (pip install 'difforge[trt]')"
        ) from None
    from polygraphy.backend import trt as polygraphy

    return TrtCalls(str(trt.__version__), polygraphy, device())


@register_runner
class TensorRTRunner(Runner):
    """Runs a component's TensorRT engine (a ``.plan`` file the engine record lists)."""

    backend = "tensorrt"
    #: how the runner reaches TensorRT (tests hand in recording fakes)
    calls: ClassVar[Callable[[], TrtCalls]] = staticmethod(trt_calls)

    def __init__(
        self, name: str, spec: ComponentEntry, path: Path, buckets: list[tuple[int, int]]
    ) -> None:
        super().__init__(name, spec)
        self.path = path
        self.buckets = buckets
        self.runner: PolyRunner | None = None
        self.profile = 0

    @classmethod
    def check_artifact(cls, manifest: Manifest) -> None:
        """Refuse engines built with another TensorRT or for another GPU, before loading."""
        found = cls.calls()
        for key, entry in manifest.components.items():
            if entry.engine is not None and entry.engine.backend == cls.backend:
                try:
                    check_engine_fits(entry.engine.settings, found.version,
                                      found.gpu.compute_capability)
                except DifforgeError as exc:
                    raise DifforgeError(f"{key}: {exc}") from None

    @classmethod
    def from_artifact(
        cls, name: str, spec: ComponentEntry, root: Path, overrides: dict[str, Any]
    ) -> TensorRTRunner:
        assert spec.engine is not None  # the loader picks this runner from the engine record
        where = f"components.{name}.engine"
        if not spec.file.endswith(".plan"):
            raise DifforgeError(f"manifest.json: components.{name}.file: not a .plan engine")
        if overrides:  # threads, providers, ONNX Runtime's profiler: not TensorRT's
            names = {"providers": "--device/--provider", "intra_op_num_threads": "--threads"}
            key = "providers" if "providers" in overrides else sorted(overrides)[0]
            raise DifforgeError(f"{names.get(key, key)} does not apply to TensorRT engines")
        raw = spec.engine.settings.get("buckets") or [[0, 0]]
        try:
            buckets = [(int(lo), int(hi)) for lo, hi in raw]
        except (TypeError, ValueError):
            raise DifforgeError(
                f"manifest.json: {where}.settings.buckets: not [lo, hi] pairs"
            ) from None
        return cls(name, spec, inside(root, check_relative(spec.file, where)), buckets)

    def _activate(self) -> None:
        calls = type(self).calls()
        engine = calls.polygraphy.EngineFromBytes(self.path.read_bytes())
        self.runner = calls.polygraphy.TrtRunner(engine)
        self.runner.activate()
        self.profile = 0

    def _bucket_of(self, feeds: dict[str, np.ndarray]) -> int:
        if self.buckets == [(0, 0)]:
            return 0
        for tensor in self.spec.inputs:
            for size, dim in zip(feeds[tensor.name].shape, tensor.shape, strict=True):
                if isinstance(dim, str) and split_dim(dim)[0] == "height":
                    height = size * split_dim(dim)[1]
                    for index, (lo, hi) in enumerate(self.buckets):
                        if lo <= height <= hi:
                            return index
                    raise DifforgeError(f"{self.name}: no TensorRT profile covers height "
                                        f"{height} (built for {self.buckets})")
        return 0

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self.runner is not None  # activate() ran
        profile = self._bucket_of(feeds)
        if profile != self.profile:
            self.runner.set_profile(profile)
            self.profile = profile
        outputs = self.runner.infer(feed_dict=feeds)
        try:
            return {t.name: np.asarray(outputs[t.name]) for t in self.spec.outputs}
        except KeyError as exc:
            raise DifforgeError(f"{self.name}: the engine has no output {exc}") from None
