"""Run every baseline on the same inputs, alternating rows call by call, and summarise."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from difforge.errors import DifforgeError
from difforge.profile.bench import baselines as bl
from difforge.profile.machine import describe_machine
from difforge.profile.stats import summarize

Progress = Callable[[str, int, int], None]
#: pause between calls so one runtime's spinning worker threads do not steal the next one's CPU
GAP_S = 0.02


#: row keys ``--rows`` picks from: the baselines, then difforge's rows (fp32 on ONNX Runtime,
#: then the lowered ones as BACKEND:PRECISION, built from one calibrated export)
BASELINES = ("eager", "compile", "ort", "openvino-f32", "openvino-default", "difforge")
LOWERED = [
    ("openvino", "fp32"),
    ("ort", "int8"),
    ("openvino", "int8"),
    ("ort", "bf16"),
    ("openvino", "bf16"),
]
ROW_KEYS = (*BASELINES, *(f"{b}:{p}" for b, p in LOWERED))


@dataclass
class BenchConfig:
    preset: str | None = "tiny-sd"
    #: a diffusers pipeline folder instead of a preset
    model: Path | None = None
    #: latent sizes (height = width); the pixel size is 8× for an SD VAE
    latents: list[int] = field(default_factory=lambda: [32, 64, 96])
    runs: int = 7
    warmup: int = 1
    threads: int | None = None
    torch_compile: bool = True
    #: the denoiser's batch (2 is one image under classifier-free guidance)
    batch: int = 1
    #: a built artifact to bench instead of compiling one (must cover the bench sizes)
    artifact: Path | None = None
    #: difforge's lowered rows (int8, bf16 on ONNX Runtime and OpenVINO) beside fp32
    lowered: bool = True
    #: the rows to run (keys of :data:`ROW_KEYS`; PyTorch eager, the reference, always runs)
    rows: tuple[str, ...] = ROW_KEYS
    #: calibration for the lowered rows: images and steps per image (None: the model's)
    calib_samples: int = 8
    calib_steps: int | None = None
    #: a folder that keeps exports and builds, reused by a later run (default: a temp folder)
    work: Path | None = None
    #: build the lowered rows behind their quality gate (with sensitivity); without it they
    #: are timed but say so, and the goal line leaves them out
    gate: bool = True

    @property
    def model_name(self) -> str:
        return self.model.name if self.model is not None else str(self.preset)


def _feeds(spec: Any, latent: int, batch: int) -> dict[str, np.ndarray]:
    sizes = {"batch": batch, "height": latent, "width": latent}
    return {k: v.numpy() for k, v in spec.sample_inputs(sizes, seed=1).items()}


def _kept(folder: Path) -> Path | None:
    """``folder`` when a previous run finished it (its manifest reads), else None."""
    from difforge import info

    try:
        info(folder, verify=False)
    except DifforgeError:
        return None
    return folder


def _build(
    config: BenchConfig, work: Path, threads: int, say: Progress
) -> tuple[list[bl.Baseline], Any]:
    """Export and build every graph first, then load each row once (none of this is timed):
    a real-size export needs the memory that open sessions would hold."""
    from difforge import build, export
    from difforge.config import BuildConfig, ExportConfig, ResolutionRange
    from difforge.exporter.components import components_for
    from difforge.exporter.prepare import resolve_resolution
    from difforge.sources import load_source

    want = set(config.rows)
    say("export and build", 0, 3)
    source = load_source(config.preset if config.model is None else None, config.model, 0)
    factor = source.vae_scale_factor
    lo, hi = min(config.latents) * factor, max(config.latents) * factor
    # every row covers the bench sizes: the model's range widened to them
    wide = replace(
        source, resolution=resolve_resolution(source.resolution, ResolutionRange(lo, lo, hi))
    )
    component = components_for(wide, max_batch=config.batch)["denoiser"]
    module = component.module.eval()
    plain = work / "plain" / "model.onnx"
    if want & {"ort", "openvino-f32", "openvino-default"} and not plain.is_file():
        partial = work / "plain.partial"  # renamed when whole: --work never reuses half a file
        shutil.rmtree(partial, ignore_errors=True)
        bl.plain_export(module, component.spec, partial / plain.name)
        shutil.rmtree(plain.parent, ignore_errors=True)
        partial.rename(plain.parent)
    say("export and build", 1, 3)
    exported = None
    artifact = config.artifact
    if artifact is None:
        exported = _kept(work / "export") or export(
            ExportConfig(
                output=work / "export",
                preset=config.preset if config.model is None else None,
                model=config.model,
                resolution=ResolutionRange(lo, lo, hi),
                max_batch=config.batch,
                verify=False,
                force=True,
            )
        )
        artifact = _kept(work / "artifact") or build(
            BuildConfig(source=exported, output=work / "artifact", threads=threads, force=True)
        )
    say("export and build", 2, 3)
    lowered = []
    if config.lowered and exported is not None:
        lowered = _lowered(config, exported, work, threads, say)
    say("export and build", 3, 3)

    rows = [bl.torch_eager(module, threads)]
    if config.torch_compile and "compile" in want:
        rows.append(bl.torch_compiled(module, threads))
    if "ort" in want:
        rows.append(
            bl.ort_session(
                plain,
                threads,
                "torch.onnx.export + ORT default",
                "dynamo export, default SessionOptions (what Optimum gives)",
            )
        )
    if "openvino-f32" in want:
        rows.append(bl.openvino(plain, threads, "f32"))
    if "openvino-default" in want:
        rows.append(bl.openvino(plain, threads, None))
    if "difforge" in want:
        rows.append(bl.difforge_artifact(artifact, threads))
    for built in lowered:
        rows.append(
            built if isinstance(built, bl.Baseline) else bl.difforge_artifact(built, threads)
        )
    return rows, component.spec


def _lowered(
    config: BenchConfig, exported: Path, work: Path, threads: int, say: Progress
) -> list[Path | bl.Baseline]:
    """Calibrate the export once and build each lowered row behind its gate (with
    ``--sensitivity``); a row that cannot be built here keeps its line, saying why."""
    from difforge import build, calibrate
    from difforge.config import BuildConfig, CalibrateConfig, PrecisionConfig

    chosen = [(b, p) for b, p in LOWERED if f"{b}:{p}" in config.rows]
    if not chosen:
        return []
    out: list[Path | bl.Baseline] = []
    say("calibrate", 0, 1)
    calibrated = _kept(work / "calibrated") or calibrate(
        CalibrateConfig(
            exported,
            work / "calibrated",
            samples=config.calib_samples,
            steps=config.calib_steps,
            force=True,
        )
    )
    for i, (backend, precision) in enumerate(chosen):
        say("build lowered rows", i, len(chosen))
        lowered = precision != "fp32"
        folder = work / f"{backend}-{precision}"
        build_config = BuildConfig(
            source=calibrated,
            output=folder,
            backend=backend,
            threads=threads,
            force=True,
            precision=PrecisionConfig(
                roles={"denoiser": precision} if lowered else {},
                gate=config.gate,
                sensitivity=config.gate,
            ),
        )
        label = f"difforge {precision} ({backend})"
        try:
            out.append(_kept(folder) or build(build_config))
        except DifforgeError as exc:
            out.append(bl.Baseline(label, precision, None, f"not built: {exc}", fp32=False))
        except Exception as exc:  # a library failing at this size keeps the row, saying so
            note = f"failed: {type(exc).__name__}: {bl._first_line(exc)}"
            out.append(bl.Baseline(label, precision, None, note, fp32=False))
    say("build lowered rows", len(chosen), len(chosen))
    return out


def _max_error(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))


def _check(config: BenchConfig) -> None:
    """Refuse settings that would fail only after minutes of exporting and compiling."""
    for name, value, least in (
        ("--runs", config.runs, 1),
        ("--batch", config.batch, 1),
        ("warm-up calls", config.warmup, 1),
    ):
        if value < least:
            raise DifforgeError(f"{name} must be at least {least}, got {value}")
    if config.threads is not None and config.threads < 0:
        raise DifforgeError(f"--threads must be 0 (all cores) or more, got {config.threads}")
    if not config.latents:
        raise DifforgeError("--resolutions needs at least one latent size")
    unknown = [r for r in config.rows if r not in ROW_KEYS]
    if unknown:
        raise DifforgeError(f"--rows: unknown {', '.join(unknown)} (known: {', '.join(ROW_KEYS)})")
    if config.calib_samples < 2:
        raise DifforgeError(
            f"--calib-samples must be at least 2 (one is held out), got {config.calib_samples}"
        )
    if (config.preset is None) == (config.model is None):
        raise DifforgeError("give exactly one of --preset or --model")


def run_bench(config: BenchConfig, progress: Progress | None = None) -> dict[str, Any]:
    import torch

    _check(config)
    say: Progress = progress or (lambda *_: None)
    threads = config.threads or os.cpu_count() or 1
    machine = describe_machine(threads)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in config.__dict__.items()}
    results: dict[str, Any] = {
        "config": settings,
        "model": config.model_name,
        "machine": machine,
        "latents": [],
    }
    with tempfile.TemporaryDirectory(prefix="difforge-bench-") as tmp:
        work = config.work or Path(tmp)
        rows, spec = _build(config, work, threads, say)
        for latent in config.latents:
            feeds = _feeds(spec, latent, config.batch)
            live = [r for r in rows if r.infer is not None]
            ref = live[0].infer(feeds)  # type: ignore[misc]  # PyTorch eager is row 0
            outputs: dict[str, np.ndarray] = {}
            failed: dict[str, str] = {}
            for row in live:  # warm-up (and torch.compile's compilation at this shape)
                try:
                    for _ in range(config.warmup):
                        outputs[row.name] = row.infer(feeds)  # type: ignore[misc]
                except Exception as exc:  # a runtime failing at one size keeps its row
                    failed[row.name] = bl._first_line(exc)
            timed = [r for r in live if r.name not in failed]
            samples: dict[str, list[float]] = {r.name: [] for r in timed}
            for i in range(config.runs):
                order = timed[i % len(timed) :] + timed[: i % len(timed)]  # rotate the order
                for row in order:
                    time.sleep(GAP_S)
                    t0 = time.perf_counter()
                    row.infer(feeds)  # type: ignore[misc]
                    samples[row.name].append(time.perf_counter() - t0)
                say(f"{latent}² latents", i + 1, config.runs)
            entries = []
            eager_p50 = summarize(samples[rows[0].name])["p50"] if rows[0].name in samples else 0
            for row in rows:
                entry: dict[str, Any] = {
                    "name": row.name,
                    "precision": row.precision,
                    "note": row.note,
                    "fp32": row.fp32,
                    "gated": row.gated,
                }
                if row.name in samples:
                    stats = summarize(samples[row.name])
                    entry.update(
                        stats=stats,
                        ratio=eager_p50 / stats["p50"] if eager_p50 else None,
                        max_abs_error=_max_error(outputs[row.name], ref),
                    )
                else:
                    entry["note"] = failed.get(row.name, row.note)
                entries.append(entry)
            results["latents"].append(
                {"latent": latent, "rows": entries, "pixels": latent * 8, "batch": config.batch}
            )
        del torch
    results["load_average_after"] = list(os.getloadavg())
    return results
