"""GPU engines against the CPU artifact: ONNX Runtime's CUDA provider and TensorRT.

Run by ``scripts/gpu_check.py`` (its engines section) or alone on a CUDA machine::

    python scripts/gpu_engines.py --work DIR [--out gpu_engines.json]

For tiny-sd and tiny-dit with CLEAR (the custom op, inlined), each fp32 and fp16:

- where ONNX Runtime has ``CUDAExecutionProvider`` (onnxruntime-gpu): the ONNX Runtime
  artifact runs on the CPU provider and on CUDA from the same seed and latents; fp32 images must
  be within 2/255 of the CPU's, fp16 ones above 30 dB PSNR (the gate's level); both are timed
  (median of 3 after a warm-up);
- where TensorRT and a GPU are there: the same exports are built with ``--backend tensorrt``,
  run by difforge's TensorRT runner, and compared and timed against the CPU artifact the same
  way.

Anything that cannot run here is reported as skipped, with the reason, instead of failing: the
script is meant to be ready for the first machine that has these libraries.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

CASES = [("tiny-sd", None), ("tiny-dit", "clear:radius=4")]
PRECISIONS = ("fp32", "fp16")


def availability() -> dict[str, str | None]:
    """Why each engine cannot be checked here (None: it can)."""
    import onnxruntime as ort

    from difforge.engines.tensorrt import trt_api
    from difforge.errors import DifforgeError

    have = ort.get_available_providers()
    out: dict[str, str | None] = {
        "ort-cuda": None if "CUDAExecutionProvider" in have
        else f"onnxruntime has no CUDAExecutionProvider (it has {', '.join(have)}; "
        "install onnxruntime-gpu)",
    }
    try:
        trt_api.load()
        trt_api.device()
        out["tensorrt"] = None
    except (DifforgeError, ImportError) as exc:
        out["tensorrt"] = str(exc)
    return out


def _compile(work: Path, preset: str, patch: str | None, precision: str) -> Path:
    from difforge import CompileConfig, ExportConfig, compile
    from difforge.config import PrecisionConfig

    name = f"{preset}-{patch or 'plain'}-{precision}".replace(":", "_").replace("=", "")
    out = work / name
    if (out / "manifest.json").is_file():
        return out
    export = ExportConfig(output=out, preset=preset, patches=[patch] if patch else [],
                          max_batch=1, force=True)
    roles = {} if precision == "fp32" else {"denoiser": precision}
    return compile(CompileConfig(export=export, precision=PrecisionConfig(roles=roles)))


def _images(artifact: Path, providers: list[str] | None) -> tuple[np.ndarray, float]:
    """The image and median seconds; ``providers`` for ONNX Runtime artifacts (None: as
    built, which a TensorRT artifact must be)."""
    from difforge.runtime import GenerateRequest, load

    pipe = load(artifact, providers=providers)
    kind = {"prompt": "a red boat"} if pipe.text_conditioned else {"class_label": 3}
    request = GenerateRequest(**kind, steps=4, seed=7)  # type: ignore[arg-type]
    pipe(request)  # warm-up
    times = []
    for _ in range(3):
        start = time.perf_counter()
        result = pipe(request)
        times.append(time.perf_counter() - start)
    return result.images[0], statistics.median(times)


def ort_cuda_rows(work: Path) -> list[dict[str, Any]]:
    from difforge.evaluation.fidelity import psnr

    rows = []
    for preset, patch in CASES:
        for precision in PRECISIONS:
            artifact = _compile(work, preset, patch, precision)
            cpu, cpu_s = _images(artifact, ["CPUExecutionProvider"])
            gpu, gpu_s = _images(artifact, ["CUDAExecutionProvider", "CPUExecutionProvider"])
            diff = int(np.abs(cpu.astype(int) - gpu.astype(int)).max())
            db = psnr(cpu, gpu)
            ok = diff <= 2 if precision == "fp32" else db >= 30.0
            rows.append({"engine": "ort-cuda", "model": preset, "patch": patch,
                         "precision": precision, "max_diff": diff, "psnr": round(db, 2),
                         "cpu_s": round(cpu_s, 4), "gpu_s": round(gpu_s, 4),
                         "speedup": round(cpu_s / gpu_s, 2), "ok": ok})
    return rows


def tensorrt_rows(work: Path) -> list[dict[str, Any]]:
    from difforge import BuildConfig, build
    from difforge.artifact.manifest import read_manifest
    from difforge.config import PrecisionConfig
    from difforge.evaluation.fidelity import psnr

    rows = []
    for preset, patch in CASES:
        for precision in PRECISIONS:
            fp32 = _compile(work, preset, patch, "fp32")
            roles = {} if precision == "fp32" else {"denoiser": precision}
            out = work / f"{fp32.name}-trt-{precision}"
            source = work / f"{fp32.name}-export"
            if not (source / "manifest.json").is_file():
                from difforge import ExportConfig, export

                export(ExportConfig(output=source, preset=preset,
                                    patches=[patch] if patch else [], max_batch=1, force=True))
            start = time.perf_counter()
            built = build(BuildConfig(source=source, output=out, backend="tensorrt", force=True,
                                      precision=PrecisionConfig(roles=roles, gate=False)))
            build_s = time.perf_counter() - start
            manifest = read_manifest(built)
            cpu, cpu_s = _images(fp32, ["CPUExecutionProvider"])
            gpu, gpu_s = _images(built, None)
            diff = int(np.abs(cpu.astype(int) - gpu.astype(int)).max())
            db = psnr(cpu, gpu)
            rows.append({
                "engine": "tensorrt", "model": preset, "patch": patch, "precision": precision,
                "build_s": round(build_s, 1),
                "settings": {k: c.engine.settings for k, c in manifest.components.items()
                             if c.engine is not None},
                "max_diff": diff, "psnr": round(db, 2), "cpu_s": round(cpu_s, 4),
                "gpu_s": round(gpu_s, 4), "speedup": round(cpu_s / gpu_s, 2),
                "ok": diff <= 2 if precision == "fp32" else db >= 30.0,
            })
    return rows


def section(work: Path) -> dict[str, Any]:
    """The engines section: rows for what ran, and what was skipped and why."""
    work.mkdir(parents=True, exist_ok=True)
    why = availability()
    report: dict[str, Any] = {"skipped": {k: v for k, v in why.items() if v}, "rows": []}
    if why["ort-cuda"] is None:
        report["rows"] += ort_cuda_rows(work)
    if why["tensorrt"] is None:
        report["rows"] += tensorrt_rows(work)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="artifacts are built here")
    parser.add_argument("--out", type=Path, default=Path("gpu_engines.json"))
    args = parser.parse_args()
    report = section(args.work)
    for engine, reason in report["skipped"].items():
        print(f"skipped {engine}: {reason}")
    for row in report["rows"]:
        print(json.dumps(row, default=str))
    args.out.write_text(json.dumps(report, indent=1, default=str))
    return 1 if any(r.get("ok") is False for r in report["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
