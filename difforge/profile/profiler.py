"""``difforge profile``: stage latencies, cold start, memory, per-op time and the roofline."""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from difforge._version import __version__
from difforge.errors import DifforgeError
from difforge.profile import ops as ops_mod
from difforge.profile.attention import attention_rows
from difforge.profile.coldstart import cold_start
from difforge.profile.flops import count_flops, input_shapes
from difforge.profile.machine import describe_machine
from difforge.profile.peak import matmul_peak
from difforge.profile.report import SCHEMA_NAME, SCHEMA_VERSION
from difforge.profile.stages import STAGES, request_for, time_stages
from difforge.profile.stats import growth_exponent
from difforge.profile.traces import READERS, merge, profiled
from difforge.runtime import Pipeline, load

#: (what is being done, done, total): the CLI draws this as a progress bar
Progress = Callable[[str, int, int], None]


@dataclass
class ProfileConfig:
    artifact: Path
    runs: int = 10
    warmup: int = 2
    resolution: int | None = None
    batch: int = 1
    steps: int | None = None
    threads: int | None = None
    sweep: list[int] = field(default_factory=list)

    def check(self) -> None:
        if self.runs < 1:
            raise DifforgeError(f"--runs must be at least 1, got {self.runs}")
        if self.warmup < 0:
            raise DifforgeError(f"--warmup must be 0 or more, got {self.warmup}")
        if self.batch < 1:
            raise DifforgeError(f"--batch must be at least 1, got {self.batch}")
        if self.steps is not None and self.steps < 1:
            raise DifforgeError(f"--steps must be at least 1, got {self.steps}")


def _silent(_: str, __: int, ___: int) -> None:
    return None


#: generations run with the profiler on: one warm-up, then the profiled ones
PROFILED_GENERATIONS = 2


def _op_profile(config: ProfileConfig, resolution: int, tmp: Path) -> dict[str, Any]:
    """A warm-up and :data:`PROFILED_GENERATIONS` generations with the engine's profiler on
    (ONNX Runtime's trace, OpenVINO's per-node counters).

    Per component the generation with the highest kernel share of its run time is kept: on
    a busy machine, a descheduled worker thread opens gaps between kernels that are not the
    model's cost.
    """
    pipeline = load(
        config.artifact,
        threads=config.threads,
        session_overrides={"profile_prefix": str(tmp / "ort")},
    )
    request = request_for(pipeline, resolution, config.batch, config.steps)
    generations = 1 + PROFILED_GENERATIONS
    for _ in range(generations):
        pipeline(request)
    chosen: list[ops_mod.Trace] = []
    aggregated: dict[str, dict[str, str]] = {}
    deepest: dict[str, dict[str, str]] = {}
    for role, runner in pipeline.runners.items():
        found = profiled(role, runner, pipeline.root / pipeline.manifest.components[role].file)
        if found is None:
            continue
        runs, tables = found
        per_gen = len(runs) // generations
        candidates = [
            merge(role, runs[g * per_gen : (g + 1) * per_gen]) for g in range(1, generations)
        ]
        chosen.append(max(candidates, key=ops_mod.kernel_share))
        aggregated[role], deepest[role] = tables.aggregated, tables.deepest
    if not chosen:
        raise DifforgeError("this artifact's engine does not support per-op profiling")
    grouped = ops_mod.group(chosen, aggregated)
    attention = attention_rows(chosen, deepest)
    if attention:
        grouped["attention"] = attention
    return grouped


def _roofline(
    pipeline: Pipeline, resolution: int, batch: int, call_p50: float, threads: int
) -> dict[str, Any]:
    req = pipeline.resolve(request_for(pipeline, resolution, batch, None))
    call_batch = batch * (2 if req.cfg else 1)
    f = pipeline.manifest.pipeline.vae_scale_factor
    entry = pipeline.manifest.components["denoiser"]
    sizes = {"batch": call_batch, "height": resolution // f, "width": resolution // f}
    counted = count_flops(pipeline.root / entry.file, input_shapes(entry, sizes))
    peak = matmul_peak(threads)
    achieved = counted.total / call_p50 / 1e9
    return {
        "component": "denoiser",
        "flops_per_call": counted.total,
        "flops_by_op": counted.by_op,
        "unresolved_nodes": counted.unresolved,
        "call_p50_s": call_p50,
        "achieved_gflops": achieved,
        "peak_gflops": peak["gflops"],
        "peak_method": f"{peak['method']}, {threads} threads",
        "ratio": achieved / peak["gflops"],
    }


def _threads_used(pipeline: Pipeline, requested: int | None) -> int:
    import os

    if requested:
        return requested
    engine = pipeline.manifest.components["denoiser"].engine
    recorded = int(engine.settings.get("intra_op_num_threads", 0)) if engine else 0
    return recorded or (os.cpu_count() or 1)


def profile(config: ProfileConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Measure everything the report holds; returns the report dict (not yet validated)."""
    config.check()
    say = progress or _silent
    pipeline = load(config.artifact, threads=config.threads)
    manifest = pipeline.manifest
    unread = sorted(
        {e.engine.backend for e in manifest.components.values() if e.engine is not None}
        - set(READERS)
    )
    if unread:
        raise DifforgeError(
            f"difforge profile reads the profilers of {', '.join(sorted(READERS))}; this "
            f"artifact's engines are {', '.join(unread)} (difforge run prints stage timings)"
        )
    denoiser = manifest.components["denoiser"]
    resolution = config.resolution or manifest.pipeline.resolution.default
    pipeline.resolve(request_for(pipeline, resolution, config.batch, config.steps))  # range checks
    for r in config.sweep:
        pipeline.resolve(request_for(pipeline, r, config.batch, config.steps))
    threads = _threads_used(pipeline, config.threads)
    machine = describe_machine(threads)

    def timed(res: int) -> dict[str, Any]:
        runs = time_stages(
            pipeline,
            res,
            config.batch,
            config.steps,
            config.runs,
            config.warmup,
            on_run=lambda done, total: say(f"timing {res}px", done, total),
        )
        return runs.summary()

    latency = timed(resolution)
    say("cold start (fresh process)", 0, 1)
    cold = cold_start(config.artifact, resolution, config.batch, config.steps, config.threads)
    say("cold start (fresh process)", 1, 1)
    say("per-op profile", 0, 1)
    with tempfile.TemporaryDirectory(prefix="difforge-profile-") as tmp:
        ops = _op_profile(config, resolution, Path(tmp))
    say("per-op profile", 1, 1)
    roofline: dict[str, Any] | None = None
    if denoiser.file.endswith(".onnx"):  # FLOPs are counted on the ONNX graph
        say("roofline (FLOPs, matmul peak)", 0, 1)
        roofline = _roofline(
            pipeline, resolution, config.batch, latency["denoiser_call"]["p50"], threads
        )
        say("roofline (FLOPs, matmul peak)", 1, 1)

    report: dict[str, Any] = {
        "schema": SCHEMA_NAME,
        "schema_version": SCHEMA_VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "difforge_version": __version__,
        "artifact": {
            "path": str(config.artifact),
            "source": str(
                manifest.source.get("name")
                or manifest.source.get("preset")
                or Path(str(manifest.source.get("path") or "?")).name
            ),
            "precision": denoiser.precision,
            "backend": denoiser.engine.backend if denoiser.engine else "ort",
            "session": dict(denoiser.engine.settings) if denoiser.engine else {},
        },
        "settings": {
            "runs": config.runs,
            "warmup": config.warmup,
            "resolution": resolution,
            "batch": latency["batch"],
            "steps": latency["steps"],
            "threads": config.threads,
            "sweep": list(config.sweep),
        },
        "machine": machine,
        "latency": latency,
        "cold_start": cold,
        "memory": {
            "peak_rss_bytes": int(cold["peak_rss_bytes"]),
            "method": "VmHWM of a fresh process that loads the artifact and generates once",
        },
        "ops": ops,
        "roofline": roofline,
    }
    if config.sweep:
        points: list[dict[str, Any]] = []
        for res in sorted(set(config.sweep)):
            lat = latency if res == resolution else timed(res)
            say(f"memory at {res}px", 0, 1)
            mem = (
                cold
                if res == resolution
                else cold_start(config.artifact, res, config.batch, config.steps, config.threads)
            )
            say(f"memory at {res}px", 1, 1)
            points.append(
                {"resolution": res, "latency": lat, "peak_rss_bytes": int(mem["peak_rss_bytes"])}
            )
        pixels = [p["resolution"] ** 2 for p in points]
        exps: dict[str, float | None] = {
            "total": growth_exponent(pixels, [p["latency"]["total"]["p50"] for p in points])
        }
        for stage in STAGES:
            exps[stage] = growth_exponent(
                pixels, [p["latency"]["stages"][stage]["p50"] for p in points]
            )
        exps["peak_rss"] = growth_exponent(pixels, [p["peak_rss_bytes"] for p in points])
        report["sweep"] = {"points": points, "growth_exponent": exps}
    return report
