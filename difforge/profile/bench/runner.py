"""Run every baseline on the same inputs, alternating rows call by call, and summarise."""

from __future__ import annotations

import os
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


@dataclass
class BenchConfig:
    preset: str = "tiny-sd"
    #: latent sizes (height = width); the pixel size is 8× for an SD VAE
    latents: list[int] = field(default_factory=lambda: [32, 64, 96])
    runs: int = 7
    warmup: int = 1
    threads: int | None = None
    torch_compile: bool = True
    batch: int = 1
    #: a built artifact to bench instead of compiling one (must cover the bench sizes)
    artifact: Path | None = None
    #: difforge's lowered rows (int8, bf16 on ONNX Runtime and OpenVINO) beside fp32
    lowered: bool = True


def _feeds(spec: Any, latent: int, batch: int) -> dict[str, np.ndarray]:
    sizes = {"batch": batch, "height": latent, "width": latent}
    return {k: v.numpy() for k, v in spec.sample_inputs(sizes, seed=1).items()}


def _build(config: BenchConfig, work: Path, threads: int, say: Progress) -> list[bl.Baseline]:
    """Export, compile and load every row once (none of this is timed)."""
    from difforge import build, export
    from difforge.config import BuildConfig, ExportConfig, ResolutionRange
    from difforge.exporter.components import components_for
    from difforge.exporter.prepare import resolve_resolution
    from difforge.sources import load_source

    steps = 6
    say("set up baselines", 0, steps)
    source = load_source(config.preset, None, 0)
    factor = source.vae_scale_factor
    lo, hi = min(config.latents) * factor, max(config.latents) * factor
    # every row covers the bench sizes: the preset's range widened to them
    wide = replace(
        source, resolution=resolve_resolution(source.resolution, ResolutionRange(lo, lo, hi))
    )
    component = components_for(wide, max_batch=config.batch)["denoiser"]
    module = component.module.eval()
    rows = [bl.torch_eager(module, threads)]
    say("set up baselines", 1, steps)
    if config.torch_compile:
        rows.append(bl.torch_compiled(module, threads))
    say("set up baselines", 2, steps)
    plain = bl.plain_export(module, component.spec, work / "plain" / "model.onnx")
    rows.append(
        bl.ort_session(
            plain,
            threads,
            "torch.onnx.export + ORT default",
            "dynamo export, default SessionOptions (what Optimum gives)",
        )
    )
    say("set up baselines", 3, steps)
    rows.append(bl.openvino(plain, threads, "f32"))
    rows.append(bl.openvino(plain, threads, None))
    say("set up baselines", 4, steps)
    exported = None
    artifact = config.artifact
    if artifact is None:
        exported = export(
            ExportConfig(
                output=work / "export",
                preset=config.preset,
                resolution=ResolutionRange(lo, lo, hi),
                max_batch=config.batch,
                verify=False,
            )
        )
        artifact = build(BuildConfig(source=exported, output=work / "artifact", threads=threads))
    say("set up baselines", 5, steps)
    rows.append(bl.difforge_artifact(artifact, threads))
    if config.lowered and exported is not None:
        rows.extend(_lowered(exported, work, threads, say))
    say("set up baselines", 6, steps)
    return rows


#: difforge's lowered rows: (backend, precision), built from one calibrated export
LOWERED = [
    ("openvino", "fp32"),
    ("ort", "int8"),
    ("openvino", "int8"),
    ("ort", "bf16"),
    ("openvino", "bf16"),
]


def _lowered(exported: Path, work: Path, threads: int, say: Progress) -> list[bl.Baseline]:
    """Calibrate the export once and build each lowered row behind its gate (with
    ``--sensitivity``); a row that cannot be built here keeps its line, saying why."""
    from difforge import build, calibrate
    from difforge.config import BuildConfig, CalibrateConfig, PrecisionConfig

    rows = []
    calibrated = calibrate(CalibrateConfig(exported, work / "calibrated"))
    for i, (backend, precision) in enumerate(LOWERED):
        say("build lowered rows", i, len(LOWERED))
        lowered = precision != "fp32"
        config = BuildConfig(
            source=calibrated,
            output=work / f"{backend}-{precision}",
            backend=backend,
            threads=threads,
            precision=PrecisionConfig(
                roles={"denoiser": precision} if lowered else {}, sensitivity=True
            ),
        )
        try:
            rows.append(bl.difforge_artifact(build(config), threads))
        except DifforgeError as exc:
            label = f"difforge {precision} ({backend})"
            rows.append(bl.Baseline(label, precision, None, f"not built: {exc}", fp32=False))
    say("build lowered rows", len(LOWERED), len(LOWERED))
    return rows


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


def run_bench(config: BenchConfig, progress: Progress | None = None) -> dict[str, Any]:
    import torch

    _check(config)
    say: Progress = progress or (lambda *_: None)
    threads = config.threads or os.cpu_count() or 1
    machine = describe_machine(threads)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in config.__dict__.items()}
    results: dict[str, Any] = {"config": settings, "machine": machine, "latents": []}
    with tempfile.TemporaryDirectory(prefix="difforge-bench-") as tmp:
        rows = _build(config, Path(tmp), threads, say)
        from difforge.exporter.components import components_for
        from difforge.sources import load_source

        spec = components_for(load_source(config.preset, None, 0), config.batch)["denoiser"].spec
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
