"""Lowered precisions of the digits reference models against their fp32 builds: the gate each
build measured, then class accuracy and FD (the digits judge) beside fp32's, written to
docs/quality-precision.md.

Usage: python scripts/precision_quality.py [--samples 1000] [--out docs/quality-precision.md]

Each model is exported once and calibrated once (8 images, seed 0); every row is built from
that calibrated export. Accuracy and FD use the same seeds and labels for every row, so the
differences are the precision's. A build whose gate fails is reported as such, not retried.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import time
from pathlib import Path
from typing import Any

from difforge import (
    BuildConfig,
    CalibrateConfig,
    ExportConfig,
    PrecisionConfig,
    build,
    calibrate,
    export,
    info,
    load,
)
from difforge._progress import SilentReporter
from difforge.engines.openvino.builder import capabilities
from difforge.errors import DifforgeError
from difforge.evaluation.run import DIGITS_GATE, digit_quality, digits_gate

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "digits-unet": ("digits-unet", []),
    "digits-unet-linfusion": (
        "digits-unet",
        ["linfusion:checkpoint=models/digits-unet-linfusion"],
    ),
    "digits-dit": ("digits-dit", []),
    "digits-dit-clear": (
        "digits-dit",
        ["clear:radius=4,weights=models/digits-dit-clear/attention.safetensors"],
    ),
}
#: (backend, precision) rows after each model's fp32 reference
ROWS = [
    ("ort", "int8"),
    ("ort", "fp16"),
    ("openvino", "int8"),
    ("openvino", "int8-weights"),
    ("openvino", "bf16"),
]


def _flags() -> str:
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile")
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = next(
        (line.split(":")[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    return " ".join(f for f in wanted if f in flags) or "none of " + ", ".join(wanted)


def _row(
    name: str,
    backend: str,
    precision: str,
    art: Path | None,
    why: str,
    q: dict[str, Any] | None,
    ref: dict[str, Any],
    seconds: float,
) -> str:
    if art is None:
        return f"| `{name}` | {backend} | {precision} | — | not built: {why} | | | | |"
    quality = info(art).components["denoiser"].engine.quality  # type: ignore[union-attr]
    gate = quality["gate"] if quality else None
    lowest = f"{min(gate['mean'].values()):.4f}" if gate else "—"
    kept = ", ".join(quality.get("groups_kept_fp32", [])) if quality else ""
    assert q is not None
    verdict = digits_gate(q, ref)
    ok = "yes" if verdict["passed"] else "**no**"
    return (
        f"| `{name}` | {backend} | {precision} | {lowest} | {kept or '—'} | {q['accuracy']:.3f} "
        f"| {q['fd']:.2f} | {ok} | {'—' if seconds != seconds else f'{seconds:.0f}'} |"
    )


def _kept(folder: Path, reuse: bool) -> Path | None:
    """A folder a previous run finished (its manifest reads), when reusing."""
    if not reuse:
        return None
    try:
        info(folder)
    except DifforgeError:
        return None
    return folder


def _write(args: argparse.Namespace, lines: list[str], start: float) -> None:
    date = dt.date.today().isoformat()
    text = (
        f"""<!-- written by scripts/precision_quality.py; do not edit -->
# Lowered precisions of the digits reference models

Each model exported once, calibrated once (`difforge calibrate`: 8 seeded images, 50 steps,
2 held out for the gate), and built per row with `--precision denoiser=P --sensitivity`
(gate: mean cosine >= 0.99 to fp32 in each of 4 timestep buckets). **lowest bucket**: the
gate's lowest bucket mean as the build measured it. **kept in fp32**: the layer groups
sensitivity kept out of the lowered graph. Accuracy and FD: {args.samples} samples, 100 per
class, seed 1000, the artifact's own sampler (flow Euler, 50 steps, guidance 1.0), scored by
the digits judge as in [quality.md](quality.md). **gate**: accuracy within
{DIGITS_GATE["max_accuracy_drop"] * 100:.0f} points and FD within
{(DIGITS_GATE["max_fd_ratio"] - 1) * 100:.0f}% of the fp32 row (`difforge eval ART --against
FP32`). **build s**: calibration excluded.

Machine: {platform.processor() or platform.machine()}, CPU flags: {_flags()};
OpenVINO reports {", ".join(capabilities())}. Date {date};
{(time.perf_counter() - start) / 60:.0f} minutes in all.

| model | engine | precision | lowest bucket | kept in fp32 | class accuracy | FD | gate | build s |
|---|---|---|---:|---|---:|---:|---|---:|
"""
        + "\n".join(lines)
        + "\n"
    )
    args.out.write_text(text, encoding="utf-8")
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/difforge-precision"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "quality-precision.md")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument(
        "--rows",
        default=",".join(f"{b}:{p}" for b, p in ROWS),
        help="BACKEND:PRECISION,... (default: every row)",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="Keep exports and builds a previous run left."
    )
    args = parser.parse_args()
    rep = SilentReporter()
    lines = []
    start = time.perf_counter()
    for name in args.models.split(","):
        model, patches = MODELS[name]
        work = args.work / name
        print(f"{name}: export and calibrate", flush=True)
        exported = _kept(work / "export", args.reuse) or export(
            ExportConfig(
                output=work / "export",
                model=ROOT / "models" / model,
                patches=patches,
                max_batch=10,
                force=True,
            )
        )
        calibrated = _kept(work / "calibrated", args.reuse) or calibrate(
            CalibrateConfig(exported, work / "calibrated", force=True), rep
        )
        fp32 = _kept(work / "fp32", args.reuse) or build(
            BuildConfig(source=exported, output=work / "fp32", force=True)
        )
        ref = digit_quality(load(fp32), args.samples, None, None, 1000, rep)
        lines.append(
            f"| `{name}` | ort | fp32 | — | — | {ref['accuracy']:.3f} | {ref['fd']:.2f} | "
            "(reference) | |"
        )
        for backend, precision in (r.split(":") for r in args.rows.split(",")):
            t0 = time.perf_counter()
            print(f"{name}: {backend} {precision}", flush=True)
            reused = _kept(work / f"{backend}-{precision}", args.reuse)
            try:
                art = reused or build(
                    BuildConfig(
                        source=calibrated,
                        output=work / f"{backend}-{precision}",
                        backend=backend,
                        force=True,
                        precision=PrecisionConfig(roles={"denoiser": precision}, sensitivity=True),
                    )
                )
            except DifforgeError as exc:
                lines.append(_row(name, backend, precision, None, str(exc), None, ref, 0.0))
                continue
            seconds = time.perf_counter() - t0 if reused is None else float("nan")
            q = digit_quality(load(art), args.samples, None, None, 1000, rep)
            lines.append(_row(name, backend, precision, art, "", q, ref, seconds))
        _write(args, lines, start)  # after each model: a long run keeps what it measured


if __name__ == "__main__":
    main()
