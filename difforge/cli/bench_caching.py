"""``bench-caching``: a model uncached and under each step-caching setting, side by side."""

from __future__ import annotations

import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

import click

from difforge.cli._common import reporter
from difforge.errors import DifforgeError


@click.command(name="bench-caching")
@click.option("--preset", default=None, help="A built-in preset.")
@click.option(
    "--model",
    type=click.Path(path_type=Path),
    default=None,
    help="A model folder (e.g. models/digits-unet).",
)
@click.option(
    "--setting",
    "settings",
    multiple=True,
    required=True,
    metavar="PATCH",
    help="A caching patch to compare with the uncached model, as --patch takes it "
    "(deepcache:interval=3); repeatable.",
)
@click.option("--images", type=int, default=8, show_default=True, help="Timed images per setting.")
@click.option("--steps", type=int, default=None, help="Sampler steps (default: the model's).")
@click.option(
    "--resolution",
    type=int,
    default=None,
    help="Build and run every setting at this one size in pixels (default: the model's).",
)
@click.option(
    "--quality-samples",
    type=int,
    default=0,
    show_default=True,
    help="Digits models: samples per setting for class accuracy and FD (1000 for a stable FD).",
)
@click.option(
    "--work",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep the compiled artifacts here and reuse them (default: a temp folder).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    multiple=True,
    help="Markdown file whose `caching` block (or --block) to rewrite (docs/perf.md, "
    "docs/quality.md); repeatable.",
)
@click.option(
    "--block",
    default="caching",
    show_default=True,
    help="Name of the block to rewrite in --out (<!-- NAME:begin --> ... <!-- NAME:end -->).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("-q", "--quiet", is_flag=True)
def bench_caching_command(
    preset: str | None,
    model: Path | None,
    settings: tuple[str, ...],
    images: int,
    steps: int | None,
    resolution: int | None,
    quality_samples: int,
    work: Path | None,
    out: tuple[Path, ...],
    block: str,
    as_json: bool,
    quiet: bool,
) -> None:
    """Per image: the uncached model and each caching setting, their speed-up and fidelity."""
    from difforge.evaluation.caching import bench_caching, render_markdown
    from difforge.profile.bench.perfdoc import check_perf_doc, update_perf_doc

    if not block.replace("-", "").replace("_", "").isalnum():
        raise DifforgeError(
            f"--block must be a plain name (letters, digits, - and _), got {block!r}"
        )
    for path in out:
        check_perf_doc(path, block)
    with tempfile.TemporaryDirectory(prefix="difforge-caching-") as tmp:
        report = bench_caching(
            list(settings),
            work or Path(tmp),
            preset=preset,
            model=model,
            images=images,
            steps=steps,
            resolution=resolution,
            quality_samples=quality_samples,
            reporter=reporter(quiet),
        )
    text = render_markdown(report, dt.date.today().isoformat())
    for path in out:
        update_perf_doc(path, text, block)
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        click.echo(text)
