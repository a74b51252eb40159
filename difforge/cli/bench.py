"""``bench``: one denoiser through PyTorch, ONNX Runtime, OpenVINO and difforge, side by side."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from difforge.cli._common import parse_ints, rich_progress


@click.command(name="bench")
@click.option("--preset", default=None, help="A built-in preset (default: tiny-sd).")
@click.option(
    "--model",
    type=click.Path(path_type=Path),
    default=None,
    help="A diffusers pipeline folder instead of a preset.",
)
@click.option(
    "--batch",
    type=int,
    default=1,
    show_default=True,
    help="Denoiser batch (2 is one image under classifier-free guidance).",
)
@click.option(
    "--rows",
    default=None,
    help="Comma-separated rows to run (default: all): "
    "eager, compile, ort, openvino-f32, openvino-default, difforge, and BACKEND:PRECISION "
    "lowered rows (openvino:fp32, ort:int8, openvino:int8, ort:bf16, openvino:bf16).",
)
@click.option(
    "--calib-samples",
    type=int,
    default=8,
    show_default=True,
    help="Images generated to calibrate the lowered rows (a quarter held out for the gate).",
)
@click.option(
    "--calib-steps", type=int, default=None, help="Steps per calibration image (model default)."
)
@click.option(
    "--work",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep exports and builds here and reuse them on the next run with the same model, "
    "sizes and batch (default: a temp folder).",
)
@click.option(
    "--block",
    default="bench",
    show_default=True,
    help="Name of the block to rewrite in --out (<!-- NAME:begin --> ... <!-- NAME:end -->).",
)
@click.option(
    "--resolutions", default="32,64,96", show_default=True, help="Latent sizes (height = width)."
)
@click.option("--runs", type=int, default=7, show_default=True, help="Timed calls per row.")
@click.option("--threads", type=int, default=None, help="Threads for every runtime (default: all).")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Markdown file whose bench block to rewrite (e.g. docs/perf.md).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--no-compile", is_flag=True, help="Skip the torch.compile row.")
@click.option(
    "--no-lowered",
    is_flag=True,
    help="Skip difforge's lowered rows (calibration and int8/bf16 builds take minutes).",
)
@click.option(
    "--artifact",
    type=click.Path(path_type=Path),
    default=None,
    help="Bench this built artifact instead of compiling the preset (must cover the sizes).",
)
@click.option(
    "--no-gate",
    is_flag=True,
    help="Build the lowered rows without their quality gate (fast at real size); they are "
    "timed, marked, and left out of the goal line.",
)
@click.option("-q", "--quiet", is_flag=True)
def bench_command(
    preset: str | None,
    model: Path | None,
    batch: int,
    rows: str | None,
    calib_samples: int,
    calib_steps: int | None,
    work: Path | None,
    block: str,
    resolutions: str,
    runs: int,
    threads: int | None,
    out: Path | None,
    as_json: bool,
    no_compile: bool,
    no_lowered: bool,
    artifact: Path | None,
    no_gate: bool,
    quiet: bool,
) -> None:
    """The same denoiser through PyTorch, ONNX Runtime, OpenVINO and difforge, side by side."""
    from difforge.errors import DifforgeError
    from difforge.profile.bench.perfdoc import check_perf_doc, update_perf_doc
    from difforge.profile.bench.runner import ROW_KEYS, BenchConfig, run_bench
    from difforge.profile.bench.table import render_block

    if not block.replace("-", "").replace("_", "").isalnum():
        raise DifforgeError(
            f"--block must be a plain name (letters, digits, - and _), got {block!r}"
        )
    if out is not None:
        check_perf_doc(out, block)
    if model is not None and preset is not None:
        raise DifforgeError("give --preset or --model, not both")
    if model is not None and not (model / "model_index.json").is_file():
        raise DifforgeError(
            f"--model {model}: not a diffusers pipeline folder (no model_index.json)"
        )
    config = BenchConfig(
        preset=None if model is not None else (preset or "tiny-sd"),
        model=model,
        batch=batch,
        rows=tuple(r.strip() for r in rows.split(",") if r.strip()) if rows else ROW_KEYS,
        calib_samples=calib_samples,
        calib_steps=calib_steps,
        work=work,
        gate=not no_gate,
        latents=parse_ints(resolutions, "--resolutions"),
        runs=runs,
        threads=threads,
        torch_compile=not no_compile,
        artifact=artifact,
        lowered=not no_lowered,
    )
    with rich_progress(not quiet) as progress:
        result = run_bench(config, progress)  # type: ignore[arg-type]
    text = render_block(result)
    if out is not None:
        update_perf_doc(out, text, block)
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    elif out is None:
        click.echo(text)
