"""ONNX Runtime session settings: what an artifact may record, and what a user may add.

An artifact is a file people download, so its settings are an allow-list of session options
with typed, bounded values: no file paths (profiling output goes where the user says, through
the runtime's overrides, never the manifest), and thread counts no larger than the machine
(a recorded count above this machine's cores is lowered to them, with a note; a count the user
asks for above them is refused).
"""

from __future__ import annotations

import os
from typing import Any

from difforge.errors import DifforgeError

LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "layout": "ORT_ENABLE_LAYOUT",
    "all": "ORT_ENABLE_ALL",
}
THREADS = ("intra_op_num_threads", "inter_op_num_threads")
FLAGS = ("enable_cpu_mem_arena", "enable_mem_pattern")
DEFAULTS: dict[str, Any] = {
    "graph_optimization_level": "all",
    "intra_op_num_threads": 0,
    "inter_op_num_threads": 1,
    "enable_cpu_mem_arena": True,
    "enable_mem_pattern": True,
}


def machine_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def _check(key: str, value: Any, where: str) -> None:
    """One setting's value, of the type and set it must be (threads: a count, 0 = all)."""
    if key == "graph_optimization_level":
        if value not in LEVELS:
            raise _bad(where, key, f"{value!r} is not one of {', '.join(LEVELS)}")
    elif key in THREADS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _bad(where, key, f"expected a thread count (0: all cores), got {value!r}")
    elif key in FLAGS:
        if not isinstance(value, bool):
            raise _bad(where, key, f"expected true or false, got {value!r}")
    else:
        raise _bad(where, key, "not a setting an artifact may record")


def recorded_settings(settings: dict[str, Any], where: str) -> tuple[dict[str, Any], list[str]]:
    """An artifact's settings checked against the allow-list (unknown keys refused, values
    typed); threads above this machine's cores lowered to them. Returns (settings, notes)."""
    out, notes = dict(DEFAULTS), []
    cores = machine_cores()
    for key, value in settings.items():
        if key == "providers":
            continue
        _check(key, value, f"manifest.json: {where}")
        if key in THREADS and value > cores:
            notes.append(
                f"the artifact asks for {value} {key.split('_')[0]}-op threads; this machine "
                f"has {cores} cores, so {cores} are used"
            )
            value = cores
        out[key] = value
    return out, notes


def user_settings(overrides: dict[str, Any]) -> dict[str, Any]:
    """What the user adds: thread counts within the machine, a profiling output prefix, the
    other settings as an artifact may record them."""
    cores = machine_cores()
    for key, value in overrides.items():
        if key in THREADS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise DifforgeError(f"--threads must be 0 (all cores) or more, got {value!r}")
            if value > cores:
                raise DifforgeError(f"--threads {value}: this machine has {cores} cores")
        elif key == "profile_prefix":
            if not isinstance(value, (str, os.PathLike)):
                raise DifforgeError(f"profile_prefix must be a path, got {value!r}")
        else:
            _check(key, value, "session setting")
    return dict(overrides)


#: ``--device`` -> the ONNX Runtime providers it means, in order (the CPU one as fallback for
#: nodes the first cannot run)
DEVICES = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def requested_providers(chosen: list[str]) -> list[str]:
    """Providers the user asked for (``--device``/``--provider``): each must be in this
    onnxruntime; the GPU ones come with NVIDIA's onnxruntime-gpu build."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    missing = [p for p in chosen if p not in have]
    if missing:
        hint = " (install onnxruntime-gpu for the CUDA and TensorRT providers)" if any(
            p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") for p in missing
        ) else ""
        raise DifforgeError(
            f"this onnxruntime has no {', '.join(missing)}; it has {', '.join(have)}{hint}"
        )
    return list(chosen)


def providers(settings: dict[str, Any], where: str) -> list[str]:
    """The execution providers an artifact records; each must be one this onnxruntime has."""
    import onnxruntime as ort

    chosen = settings.get("providers") or ["CPUExecutionProvider"]
    if not isinstance(chosen, list) or not all(isinstance(p, str) for p in chosen):
        raise _bad(f"manifest.json: {where}", "providers", "expected a list of provider names")
    missing = [p for p in chosen if p not in ort.get_available_providers()]
    if missing:
        raise DifforgeError(
            f"{where}: this onnxruntime has no {', '.join(missing)} "
            f"(it has {', '.join(ort.get_available_providers())})"
        )
    return list(chosen)


def session_options(settings: dict[str, Any]) -> Any:
    """ONNX Runtime session options from checked settings."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    level = LEVELS[settings.get("graph_optimization_level", "all")]
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    opts.intra_op_num_threads = int(settings.get("intra_op_num_threads", 0))
    opts.inter_op_num_threads = int(settings.get("inter_op_num_threads", 1))
    opts.enable_cpu_mem_arena = bool(settings.get("enable_cpu_mem_arena", True))
    opts.enable_mem_pattern = bool(settings.get("enable_mem_pattern", True))
    opts.log_severity_level = 3
    if settings.get("profile_prefix"):
        opts.enable_profiling = True
        opts.profile_file_prefix = str(settings["profile_prefix"])
    return opts


def _bad(where: str, key: str, why: str) -> DifforgeError:
    return DifforgeError(f"{where}.{key}: {why}")
