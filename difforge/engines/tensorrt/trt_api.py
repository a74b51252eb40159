"""The one module that calls TensorRT, through Polygraphy's TensorRT loaders.

Everything difforge asks of TensorRT passes through :func:`build_engine` and :func:`device`,
typed by the :class:`TrtModule` and :class:`Loaders` protocols below; the rest of the backend
(profiles, cache keys, records, refusals) is plain code tested on any machine, and these calls
are tested against recording fakes of a TensorRT 10 and a TensorRT 11 module. Polygraphy's
loaders (``NetworkFromOnnxPath``, ``CreateConfig``, ``Profile``, ``EngineBytesFromNetwork``)
are NVIDIA's, tested by NVIDIA against real TensorRT, and import it lazily.

The build mode is chosen by what the installed module exposes, never by its version string:

- ``tensorrt.BuilderFlag.FP16`` exists (TensorRT 10.x, JetPack 6's 10.3 included): weakly
  typed; the manifest's precision becomes builder flags (fp16, bf16, int8 for a Q/DQ graph);
- it does not (TensorRT 11 dropped weak typing): strongly typed; the precision is the graph's
  own casts and Q/DQ nodes, which difforge's lowered graphs carry, and no flag is passed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from difforge.artifact.engine_fit import Device, device
from difforge.engines.tensorrt.profiles import ShapeProfile
from difforge.errors import DifforgeError

#: the manifest precisions a weakly typed build turns into builder flags
PRECISION_FLAGS = {"fp16": ("fp16",), "bf16": ("bf16",), "int8": ("int8",), "fp32": ()}


class TrtModule(Protocol):
    """What difforge reads of the ``tensorrt`` module."""

    __version__: str
    BuilderFlag: Any


class TrtProfile(Protocol):
    def add(self, name: str, min: Any, opt: Any, max: Any) -> Any: ...


class Loaders(Protocol):
    """What difforge calls of ``polygraphy.backend.trt``."""

    def NetworkFromOnnxPath(
        self, path: str, *, strongly_typed: bool | None = None
    ) -> Any: ...

    def CreateConfig(self, **settings: Any) -> Any: ...

    def Profile(self) -> TrtProfile: ...

    def EngineBytesFromNetwork(
        self, network: Any, *, config: Any, save_timing_cache: str | None = None
    ) -> Callable[[], bytes]: ...


@dataclass(frozen=True)
class Capabilities:
    version: str
    #: builder precision flags exist (TensorRT <= 10)
    weak_typing: bool


def capabilities(trt: TrtModule) -> Capabilities:
    return Capabilities(str(trt.__version__), hasattr(trt.BuilderFlag, "FP16"))


@dataclass(frozen=True)
class EngineRequest:
    onnx: Path
    precision: str
    profiles: list[ShapeProfile]
    timing_cache: Path | None = None
    refittable: bool = False
    weight_streaming: bool = False


@dataclass
class BuiltEngine:
    plan: bytes
    settings: dict[str, Any] = field(default_factory=dict)


def build_engine(trt: TrtModule, loaders: Loaders, request: EngineRequest) -> BuiltEngine:
    """Parse, configure and build one engine; the settings say how (for the manifest)."""
    caps = capabilities(trt)
    if request.precision not in PRECISION_FLAGS:
        known = ", ".join(PRECISION_FLAGS)
        raise DifforgeError(f"TensorRT builds {known}, not {request.precision}")
    strongly = not caps.weak_typing
    if request.weight_streaming and not strongly:
        raise DifforgeError("TensorRT weight streaming needs a strongly typed build "
                            "(TensorRT 11, or a graph that carries its precision)")
    network = loaders.NetworkFromOnnxPath(str(request.onnx), strongly_typed=strongly or None)
    profiles = []
    for shape_profile in request.profiles:
        profile = loaders.Profile()
        for name, (low, opt, high) in shape_profile.shapes.items():
            profile.add(name, min=low, opt=opt, max=high)
        profiles.append(profile)
    flags = () if strongly else PRECISION_FLAGS[request.precision]
    settings: dict[str, Any] = {"profiles": profiles, **{flag: True for flag in flags}}
    if request.timing_cache is not None:
        settings["load_timing_cache"] = str(request.timing_cache)
    if request.refittable:
        settings["refittable"] = True
    if request.weight_streaming:
        settings["weight_streaming"] = True
    config = loaders.CreateConfig(**settings)
    save = str(request.timing_cache) if request.timing_cache is not None else None
    plan = loaders.EngineBytesFromNetwork(network, config=config, save_timing_cache=save)()
    return BuiltEngine(
        plan,
        {
            "tensorrt": caps.version,
            "typing": "strong" if strongly else "weak",
            "flags": list(flags),
            "profiles": len(profiles),
            "refittable": request.refittable,
            "weight_streaming": request.weight_streaming,
        },
    )


def load() -> tuple[TrtModule, Loaders]:
    """The installed TensorRT and Polygraphy's loaders, or one line saying what is missing."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise DifforgeError(
            "--backend tensorrt needs TensorRT's Python module, which is not importable here "
            f"({exc}); install it from NVIDIA's index on a machine with an NVIDIA GPU "
            "(pip install 'difforge[trt]')"
        ) from None
    from polygraphy.backend import trt as loaders

    return trt, loaders


__all__ = [
    "Capabilities", "Device", "EngineRequest", "build_engine", "capabilities", "device", "load"
]
