"""``difforge doctor``: what this machine can build and run, on one screen.

Every probe imports lazily and reports absence as a fact, never as an error: ONNX Runtime's
providers, OpenVINO's devices, TensorRT (and whether it builds weakly or strongly typed
engines), the GPU and its compute capability (cuda-python), difforge's custom ops and their
TensorRT plugins, the engine cache, and the backends whose engines this install can run.
"""

from __future__ import annotations

import importlib.util
import platform
from typing import Any

from difforge._version import __version__
from difforge.engines import available_backends
from difforge.engines.tensorrt import trt_api
from difforge.engines.tensorrt.cache import EngineCache
from difforge.errors import DifforgeError
from difforge.profile.machine import describe_machine, flag_summary
from difforge.runtime.runners import available_runners


def _onnxruntime() -> dict[str, Any]:
    try:
        import onnxruntime as ort
    except ImportError:
        return {"installed": False}
    from difforge._deps import onnxruntime_distributions

    return {"installed": True, "version": ort.__version__,
            "providers": list(ort.get_available_providers()),
            "distributions": onnxruntime_distributions()}


def _openvino() -> dict[str, Any]:
    if importlib.util.find_spec("openvino") is None:
        return {"installed": False}
    import openvino as ov

    devices = list(ov.Core().available_devices)
    return {"installed": True, "version": ov.get_version(), "devices": devices}


def _tensorrt() -> dict[str, Any]:
    try:
        trt, _ = trt_api.load()
    except (DifforgeError, ImportError):
        return {"installed": False}
    caps = trt_api.capabilities(trt)
    return {"installed": True, "version": caps.version,
            "typing": "weak and strong" if caps.weak_typing else "strong only"}


def _gpu() -> dict[str, Any]:
    try:
        found = trt_api.device()
    except (DifforgeError, ImportError) as exc:
        return {"found": False, "why": str(exc)}
    return {"found": True, "name": found.name, "compute_capability": found.compute_capability}


def _custom_ops() -> dict[str, str]:
    from difforge.plugins.onnx_ops import op_names

    return {name: "no TensorRT plugin yet (standard-op body inlined)" for name in op_names()}


def doctor() -> dict[str, Any]:
    cache = EngineCache()
    engines = cache.entries()
    return {
        "difforge": __version__,
        "python": platform.python_version(),
        "machine": describe_machine(0),
        "onnxruntime": _onnxruntime(),
        "openvino": _openvino(),
        "tensorrt": _tensorrt(),
        "gpu": _gpu(),
        "custom_ops": _custom_ops(),
        "engine_cache": {"root": str(cache.root), "engines": len(engines),
                         "bytes": sum(e.size for e in engines)},
        "backends": {b: b in available_runners() for b in available_backends()},
    }


def _ort_line(ort: dict[str, Any]) -> str:
    dists = ort["distributions"]
    providers = ", ".join(ort["providers"])
    line = f"{ort['version']} (from {', '.join(dists) or '?'}), providers {providers}"
    if len(dists) > 1:
        line += (f"; warning: both {' and '.join(dists)} are installed, and they overwrite each "
                 "other's files: uninstall all and install one")
    return line


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    ort, ov, trt, gpu = report["onnxruntime"], report["openvino"], report["tensorrt"], report["gpu"]
    lines = [
        f"difforge {report['difforge']}, Python {report['python']}",
        f"CPU: {m['cpu_model']}, {m['logical_cpus']} logical CPUs, flags {flag_summary(m)}",
        "ONNX Runtime: " + (_ort_line(ort) if ort["installed"] else "not installed"),
        "OpenVINO: " + (f"{ov['version']}, devices {', '.join(ov['devices'])}"
                        if ov["installed"] else "not installed"),
        "TensorRT: " + (f"{trt['version']} ({trt['typing']} typed builds)"
                        if trt["installed"] else "not installed"),
        "GPU: " + (f"{gpu['name']}, compute capability {gpu['compute_capability']}"
                   if gpu["found"] else f"none found ({gpu['why']})"),
        "custom ops: " + ("; ".join(f"{k}: {v}" for k, v in report["custom_ops"].items())
                          or "none registered"),
        f"engine cache: {report['engine_cache']['root']} ({report['engine_cache']['engines']} "
        f"engines, {report['engine_cache']['bytes'] / 1e6:.1f} MB)",
        "backends: " + ", ".join(
            f"{b} ({'runner here' if runs else 'no runner yet'})"
            for b, runs in report["backends"].items()
        ),
    ]
    return "\n".join(lines)
