"""``profile``: where an artifact's time goes (stages, cold start, memory, per-op, roofline)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from difforge.cli._common import parse_ints, rich_progress


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
