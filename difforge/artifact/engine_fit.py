"""Whether a TensorRT engine fits this machine: engines are specific to the TensorRT version
and the GPU's compute capability that built them. Shared by the builder's cache and the
runtime's TensorRT runner (which reads only the artifact), with the probe of the GPU they are
judged against (cuda-python, imported when called)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from difforge.errors import DifforgeError


def check_engine_fits(settings: dict[str, Any], tensorrt: str, compute_capability: str) -> None:
    """Refuse an engine built for another TensorRT version or GPU, in one line."""
    built = (str(settings.get("tensorrt")), str(settings.get("compute_capability")))
    if built != (tensorrt, compute_capability):
        raise DifforgeError(
            f"this engine was built with TensorRT {built[0]} for compute capability {built[1]}; "
            f"this machine has TensorRT {tensorrt} on compute capability {compute_capability}: "
            "build it again here (difforge build --backend tensorrt)"
        )


@dataclass(frozen=True)
class Device:
    name: str
    compute_capability: str


def device() -> Device:
    """GPU 0's name and compute capability (cuda-python's runtime API)."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python 12.6 and later
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python (JetPack's may be)
        except ImportError:
            raise DifforgeError(
                "cuda-python is not installed, so no GPU can be read (pip install "
                "'difforge[trt]')"
            ) from None
    err, props = cudart.cudaGetDeviceProperties(0)
    if int(err) != 0:
        raise DifforgeError(f"no CUDA GPU is usable here (cudaGetDeviceProperties: {err})")
    return Device(props.name.decode(errors="replace"), f"{props.major}.{props.minor}")
