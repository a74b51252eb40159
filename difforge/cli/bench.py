"""``bench``: one denoiser through PyTorch, ONNX Runtime, OpenVINO and difforge, side by side."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from difforge.cli._common import parse_ints, rich_progress


@click.command(name="bench")
@click.option("--preset", default="tiny-sd", show_default=True)
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
@click.option("-q", "--quiet", is_flag=True)
def bench_command(
    preset: str,
    resolutions: str,
    runs: int,
    threads: int | None,
    out: Path | None,
    as_json: bool,
    no_compile: bool,
    no_lowered: bool,
    artifact: Path | None,
    quiet: bool,
) -> None:
    """The same denoiser through PyTorch, ONNX Runtime, OpenVINO and difforge, side by side."""
    from difforge.profile.bench.perfdoc import check_perf_doc, update_perf_doc
    from difforge.profile.bench.runner import BenchConfig, run_bench
    from difforge.profile.bench.table import render_block

    if out is not None:
        check_perf_doc(out)
    config = BenchConfig(
        preset=preset,
        latents=parse_ints(resolutions, "--resolutions"),
        runs=runs,
        threads=threads,
        torch_compile=not no_compile,
        artifact=artifact,
        lowered=not no_lowered,
    )
    with rich_progress(not quiet) as progress:
        result = run_bench(config, progress)  # type: ignore[arg-type]
    block = render_block(result)
    if out is not None:
        update_perf_doc(out, block)
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    elif out is None:
        click.echo(block)
