"""``difforge bench-caching``: one model uncached and under each step-caching setting, side by
side in one run: seconds per image, the speed-up, fidelity to the uncached images (PSNR on
the same seeds), and for the digits reference models class accuracy and FD with the gate a
lowered build must pass (accuracy within 2 points, FD within 15% of the uncached build's).

Every artifact is compiled from the same source (into ``work``, reused when the stamp beside
it names the same source folder, its newest file time, the setting and difforge's version) and
timed image by image, settings interleaved per seed so that drifts of the machine fall on all
of them alike.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from difforge._progress import Reporter, SilentReporter
from difforge.errors import DifforgeError
from difforge.evaluation.fidelity import psnr
from difforge.evaluation.run import MAX_QUALITY_SAMPLES, digit_quality, digits_gate
from difforge.exporter.prepare import create_patches

UNCACHED = "uncached"
MAX_IMAGES = 64


@dataclass
class CachingRow:
    setting: str
    seconds: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    schedule: str = ""
    quality: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None

    @property
    def per_image(self) -> float:
        return statistics.median(self.seconds)


@dataclass
class CachingReport:
    source: str
    steps: int
    images: int
    rows: list[CachingRow]
    machine: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        base = self.rows[0].per_image
        return {
            "source": self.source,
            "steps": self.steps,
            "images": self.images,
            "machine": self.machine,
            "rows": [
                {
                    "setting": r.setting,
                    "seconds_per_image": r.per_image,
                    "speedup": base / r.per_image,
                    "psnr_mean": statistics.fmean(r.psnr) if r.psnr else None,
                    "psnr_worst": min(r.psnr) if r.psnr else None,
                    "schedule": r.schedule,
                    "quality": r.quality,
                    "gate": r.gate,
                }
                for r in self.rows
            ],
        }


def _compile(source: dict[str, Any], patch: str | None, out: Path, rep: Reporter) -> Path:
    """The artifact of one setting; one compiled earlier for the same source and setting (the
    stamp beside it says so) is reused."""
    from difforge.api import compile
    from difforge.config import CompileConfig, ExportConfig, ResolutionRange

    size = source["resolution"]
    stamp = f"{source['stamp']} | {patch or UNCACHED}"
    fixed = ResolutionRange() if size is None else ResolutionRange(size, size, size)
    marker = out.with_suffix(".stamp")
    if (out / "manifest.json").is_file() and marker.is_file() and marker.read_text() == stamp:
        rep.note(f"reusing {out} ({patch or UNCACHED})")
        return out
    cfg = ExportConfig(
        output=out,
        preset=source["preset"],
        model=source["model"],
        patches=[patch] if patch else [],
        force=True,
        resolution=fixed,
    )
    built = compile(CompileConfig(export=cfg), rep)
    marker.write_text(stamp, encoding="utf-8")
    return built


def _source_stamp(preset: str | None, model: Path | None) -> str:
    """What a reusable artifact must have been compiled from: the preset, or the folder's
    resolved path and newest file time; and this difforge's version and artifact format."""
    from difforge._version import __version__
    from difforge.artifact.manifest import FORMAT_VERSION

    made_by = f"difforge {__version__}, format {FORMAT_VERSION}"
    if model is None:
        return f"preset {preset}, {made_by}"
    root = model.resolve()
    newest = max((p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()), default=0)
    return f"{root} @ {newest}, {made_by}"


def bench_caching(
    settings: list[str],
    work: Path,
    *,
    preset: str | None = None,
    model: Path | None = None,
    images: int = 8,
    steps: int | None = None,
    resolution: int | None = None,
    quality_samples: int = 0,
    reporter: Reporter | None = None,
) -> CachingReport:
    """Compile the model uncached and with each ``--patch`` setting in ``settings`` (built for
    ``resolution`` px alone if given), then time ``images`` generations of each (same seeds)
    and score them against the uncached ones."""
    from difforge.profile.machine import describe_machine
    from difforge.runtime import GenerateRequest, load

    rep = reporter or SilentReporter()
    if not settings:
        raise DifforgeError("give at least one caching setting, e.g. deepcache:interval=3")
    if (preset is None) == (model is None):
        raise DifforgeError("give one of --preset or --model")
    if not 1 <= images <= MAX_IMAGES:
        raise DifforgeError(f"--images must be in [1, {MAX_IMAGES}], got {images}")
    if resolution is not None and not 8 <= resolution <= 8192:
        raise DifforgeError(f"--resolution must be in [8, 8192] pixels, got {resolution}")
    if len(set(settings)) != len(settings):
        raise DifforgeError("a caching setting is given twice")
    if not 0 <= quality_samples <= MAX_QUALITY_SAMPLES:
        raise DifforgeError(
            f"--quality-samples must be in [0, {MAX_QUALITY_SAMPLES}], got {quality_samples}"
        )
    for setting in settings:  # every setting's options checked before anything is compiled
        create_patches([setting])
    label = str(model) if model is not None else str(preset)
    if resolution is not None:
        label += f"` at `{resolution} px"
    source = {
        "preset": preset,
        "model": model,
        "stamp": _source_stamp(preset, model) + (f", {resolution} px" if resolution else ""),
        "resolution": resolution,
    }
    names = [UNCACHED, *settings]
    pipes = []
    for index, setting in enumerate(names):
        patch = None if setting == UNCACHED else setting
        out = _compile(source, patch, work / f"setting-{index}", rep)
        pipes.append(load(out))
        if index == 0 and quality_samples and pipes[0].manifest.source.get("reference") != "digits":
            raise DifforgeError("accuracy and FD need a digits reference model (models/digits-*)")
    class_model = pipes[0].manifest.pipeline.type == "class-to-image"
    first = pipes[0].resolve(GenerateRequest(class_label=0, steps=steps) if class_model
                             else GenerateRequest(prompt="a photo", steps=steps))
    rows = [CachingRow(name) for name in names]
    with rep.progress("images, settings interleaved", total=images * len(names)) as advance:
        for i in range(-1, images):  # image -1 warms every session up, untimed
            kw: dict[str, Any] = {"seed": i + 1, "steps": first.steps}
            if resolution is not None:
                kw.update(height=resolution, width=resolution)
            req = GenerateRequest(class_label=i % 10, **kw) if class_model else GenerateRequest(
                prompt="a castle on a hill, oil painting", **kw
            )
            base = None
            for row, pipe in zip(rows, pipes, strict=True):
                start = time.perf_counter()
                result = pipe(req)
                elapsed = time.perf_counter() - start
                if i < 0:
                    row.schedule = _runs(result.request.get("schedule", []))
                    continue
                row.seconds.append(elapsed)
                image = result.images[0]
                if base is None:
                    base = image
                else:
                    row.psnr.append(psnr(image, base))
                advance(1)
    if quality_samples:
        for row, pipe in zip(rows, pipes, strict=True):
            row.quality = digit_quality(pipe, quality_samples, first.steps, None, 0, rep)
            if row.setting != UNCACHED and rows[0].quality is not None:
                row.gate = digits_gate(row.quality, rows[0].quality)
    return CachingReport(label, first.steps, images, rows, describe_machine(0))


def _runs(schedule: list[str]) -> str:
    counts: dict[str, int] = {}
    for name in schedule:
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{k} ×{v}" for k, v in counts.items())


def render_markdown(report: CachingReport, date: str) -> str:
    """The report as the Markdown block ``docs/perf.md`` and ``docs/quality.md`` keep."""
    from difforge.profile.machine import flag_summary

    m = report.machine
    data = report.to_dict()
    lines = [
        f"Measured {date} by `difforge bench-caching` on `{report.source}`, {report.steps} "
        f"steps, {report.images} images per setting (median seconds per image; settings "
        f"interleaved per seed): {m.get('cpu_model', '?')}, {m.get('logical_cpus', '?')} "
        f"logical CPUs, flags {flag_summary(m)}.",
        "",
        "| setting | steps run (full / cached) | s per image | speed-up | PSNR vs uncached, "
        "mean / worst (dB) | class accuracy | FD | gate (acc. −2 pts, FD +15%) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in data["rows"]:
        quality, gate = row["quality"] or {}, row["gate"]
        shown_psnr = (
            "—" if row["psnr_mean"] is None
            else f"{row['psnr_mean']:.2f} / {row['psnr_worst']:.2f}"
        )
        verdict = "—" if gate is None else (
            f"{'pass' if gate['passed'] else 'FAIL'} ({-gate['accuracy_drop'] * 100:+.1f} pts, "
            f"FD ×{gate['fd_ratio']:.2f})"
        )
        lines.append(
            f"| {row['setting']} | {row['schedule'] or '—'} | {row['seconds_per_image']:.3f} | "
            f"{row['speedup']:.2f}x | {shown_psnr} | "
            f"{quality.get('accuracy', float('nan')):.3f} | {quality.get('fd', float('nan')):.2f} "
            f"| {verdict} |"
            if quality else
            f"| {row['setting']} | {row['schedule'] or '—'} | {row['seconds_per_image']:.3f} | "
            f"{row['speedup']:.2f}x | {shown_psnr} | — | — | {verdict} |"
        )
    return "\n".join(lines)
