"""What the numbers were measured on: CPU model and flags, threads, library versions, load."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

#: CPU flags that matter for fp32/bf16/int8 inference kernels.
INTERESTING_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_bf16",
    "avx512_fp16",
    "avx512_vnni",
    "avx_vnni",
    "amx_bf16",
    "amx_int8",
    "amx_tile",
)

LIBRARIES = ("onnxruntime", "numpy", "torch", "onnx", "onnxscript", "openvino", "diffusers")


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set[str]()
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return model, flags
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def describe_machine(threads: int) -> dict[str, Any]:
    """A JSON-able description of this machine, for reports and the bench table."""
    model, flags = _cpuinfo()
    try:
        load = list(os.getloadavg())
    except OSError:
        load = []
    return {
        "cpu_model": model,
        "cpu_flags": sorted(f for f in INTERESTING_FLAGS if f in flags),
        "logical_cpus": os.cpu_count() or 0,
        "threads": threads,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "libraries": library_versions(),
        "load_average": load,
    }


def flag_summary(machine: dict[str, Any]) -> str:
    """One line: AMX present or not, AVX-512 BF16, VNNI."""
    flags = set(machine.get("cpu_flags", []))
    amx = "AMX" if {"amx_bf16", "amx_int8"} & flags else "no AMX"
    return ", ".join(sorted(flags)) + f" ({amx})"
