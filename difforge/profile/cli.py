"""Click commands ``profile`` and ``bench``; the main CLI registers them with ``add_command``."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from difforge.errors import DifforgeError


def parse_ints(text: str | None, option: str) -> list[int]:
    if not text:
        return []
    try:
        values = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise DifforgeError(f"{option} takes comma-separated integers, got {text!r}") from None
    if any(v <= 0 for v in values):
        raise DifforgeError(f"{option} values must be positive, got {text!r}")
    return values


@contextmanager
def rich_progress(enabled: bool) -> Iterator[object]:
    """A rich progress bar on stderr (so --json stays clean); a no-op callback when disabled."""
    if not enabled:
        yield lambda *_: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bars: dict[str, object] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bar:

        def update(what: str, done: int, total: int) -> None:
            if what not in bars:
                bars[what] = bar.add_task(what, total=total)
            bar.update(bars[what], completed=done, total=total)  # type: ignore[arg-type]

        yield update


@click.command(name="profile")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--runs", type=int, default=10, show_default=True, help="Timed generations.")
@click.option("--warmup", type=int, default=2, show_default=True, help="Untimed generations first.")
@click.option("--resolution", type=int, default=None, help="Pixels (default: the artifact's).")
@click.option("--batch", type=int, default=1, show_default=True, help="Images per generation.")
@click.option("--steps", type=int, default=None, help="Sampler steps (default: the artifact's).")
@click.option("--threads", type=int, default=None, help="Intra-op threads (default: as built).")
@click.option("--sweep", default=None, help="Also measure these resolutions, e.g. 256,512.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("profile-report"),
    show_default=True,
    help="Folder for report.json, report.md, report.html.",
)
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
def profile_command(
    artifact: Path,
    runs: int,
    warmup: int,
    resolution: int | None,
    batch: int,
    steps: int | None,
    threads: int | None,
    sweep: str | None,
    out: Path,
    as_json: bool,
    quiet: bool,
) -> None:
    """Where the time goes: stages, cold start, memory, per-op time, roofline."""
    from difforge._deps import PROFILE, require

    require(PROFILE)
    from difforge.profile.profiler import ProfileConfig, profile
    from difforge.profile.report import write_reports

    config = ProfileConfig(
        artifact=artifact,
        runs=runs,
        warmup=warmup,
        resolution=resolution,
        batch=batch,
        steps=steps,
        threads=threads,
        sweep=parse_ints(sweep, "--sweep"),
    )
    with rich_progress(not quiet) as progress:
        report = profile(config, progress)  # type: ignore[arg-type]
    paths = write_reports(report, out)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    elif not quiet:
        click.echo(f"wrote {paths['json']}, {paths['md']}, {paths['html']}", err=True)


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
