"""The rows of the benchmark: each turns a feed dict into the denoiser's output.

Every baseline is set up once (export, compile, session creation are not timed) and then
called with numpy feeds; what it could not do is recorded in ``note`` rather than raised, so
one failing runtime does not hide the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Infer = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass
class Baseline:
    name: str
    precision: str
    infer: Infer | None
    note: str = ""
    #: counted among the fp32 rows difforge must match or beat
    fp32: bool = True
    #: its quality is known: fp32, or a lowered build that passed its gate
    gated: bool = True


def torch_eager(module: Any, threads: int) -> Baseline:
    import torch

    torch.set_num_threads(threads)

    def infer(feeds: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            args = [torch.from_numpy(feeds[k]) for k in feeds]
            return np.asarray(module(*args).numpy())

    return Baseline("PyTorch eager", "fp32", infer, f"torch.set_num_threads({threads})")


def torch_compiled(module: Any, threads: int) -> Baseline:
    """``torch.compile`` (inductor); compilation happens on the first call at each shape."""
    import torch

    torch.set_num_threads(threads)
    try:
        compiled = torch.compile(module, dynamic=True)
    except Exception as exc:  # torch.compile raises many kinds on unsupported setups
        return Baseline("torch.compile", "fp32", None, f"failed: {_first_line(exc)}")

    def infer(feeds: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            args = [torch.from_numpy(feeds[k]) for k in feeds]
            return np.asarray(compiled(*args).numpy())

    return Baseline(
        "torch.compile (inductor)", "fp32", infer, "dynamic=True; compile time not timed"
    )


def plain_export(module: Any, spec: Any, path: Path) -> Path:
    """A plain ``torch.onnx.export(dynamo=True)`` with the spec's dynamic axes: no difforge
    passes, the graph a user (or Optimum) would get."""
    import contextlib
    import io
    import logging
    import warnings

    import torch

    sample = spec.sample_inputs(spec.profile("opt"))
    names = [t.name for t in spec.inputs]
    dims = spec.dynamic_shapes()
    path.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            tuple(sample[n] for n in names),
            dynamo=True,
            input_names=names,
            output_names=[t.name for t in spec.outputs],
            dynamic_shapes=tuple(dims.get(n, {}) for n in names),
        )
        assert program is not None
        program.save(str(path))
    return path


def ort_session(path: Path, threads: int, name: str, note: str) -> Baseline:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    output = sess.get_outputs()[0].name

    def infer(feeds: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(sess.run([output], feeds)[0])

    return Baseline(name, "fp32", infer, note)


def openvino(path: Path, threads: int, precision_hint: str | None) -> Baseline:
    """OpenVINO CPU from the same ONNX; ``None`` leaves its default precision (reported)."""
    label = "OpenVINO f32" if precision_hint else "OpenVINO default"
    try:
        import openvino as ov
    except ImportError:
        return Baseline(label, "?", None, "openvino is not installed", fp32=bool(precision_hint))
    core = ov.Core()
    config: dict[str, Any] = {
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
    }
    if precision_hint:
        config["INFERENCE_PRECISION_HINT"] = precision_hint
    try:
        compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    except Exception as exc:  # openvino raises RuntimeError subclasses with long texts
        return Baseline(label, "?", None, f"failed: {_first_line(exc)}", bool(precision_hint))
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    picked = str(getattr(hint, "get_type_name", lambda: hint)())
    precision = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(picked, picked)
    request = compiled.create_infer_request()
    names = [p.get_any_name() for p in compiled.inputs]

    def infer(feeds: dict[str, np.ndarray]) -> np.ndarray:
        result = request.infer({n: feeds[n] for n in names})
        return np.asarray(next(iter(result.values())))

    note = (
        f"INFERENCE_PRECISION_HINT={precision_hint}"
        if precision_hint
        else f"default precision: OpenVINO picked {picked} on this CPU"
    )
    return Baseline(label, precision, infer, note, fp32=precision == "fp32")


def difforge_artifact(artifact: Path, threads: int) -> Baseline:
    from difforge.runtime import load

    pipeline = load(artifact, threads=threads)
    runner = pipeline.runners["denoiser"]

    def infer(feeds: dict[str, np.ndarray]) -> np.ndarray:
        return runner.infer(feeds)["noise_pred"]

    entry = pipeline.manifest.components["denoiser"]
    engine = entry.engine
    passes = engine.passes if engine is not None else []
    fusions = {k: v for p in passes for k, v in p.details.get("fusions", {}).items()}
    fused = ", ".join(f"{v} {k}" for k, v in fusions.items())
    backend = engine.backend if engine is not None else "ort"
    note = fused or "no fusions"
    quality = engine.quality if engine is not None else None
    gated = entry.precision == "fp32" or bool(quality and quality.get("gate"))
    if not gated:
        note = "built with --no-gate: quality not checked, left out of the goal line"
    if quality and quality.get("gate"):
        gate = quality["gate"]
        kept = quality.get("groups_kept_fp32") or []
        note = (
            f"gate: lowest bucket cosine {min(gate['mean'].values()):.4f}"
            + (f"; {len(kept)} layer groups kept in fp32" if kept else "")
        )
    label = f"difforge {entry.precision} ({'ORT' if backend == 'ort' else 'OpenVINO'})"
    return Baseline(label, entry.precision, infer, note, entry.precision == "fp32", gated)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]
