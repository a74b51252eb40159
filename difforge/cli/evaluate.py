"""``eval``: an artifact's images against its PyTorch source."""

from __future__ import annotations

import json
from pathlib import Path

import click

from difforge.cli._common import reporter
from difforge.errors import DifforgeError


@click.command(name="eval")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--images", type=int, default=4, show_default=True, help="Images compared.")
@click.option(
    "--quality-samples",
    type=int,
    default=None,
    help="Samples for class accuracy and FD (digits models; default 1000, 0 skips).",
)
@click.option("--steps", type=int, default=None, help="Sampler steps (default: the artifact's).")
@click.option("--guidance", type=float, default=None, help="Guidance scale.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--prompt", default=None, help='Text prompt (text artifacts; default "a photo of a cat").'
)
@click.option("--threads", type=int, default=None, help="Intra-op threads (default: as built).")
@click.option(
    "--min-psnr", type=float, default=None, help="Exit 1 if the worst PSNR (dB) is below this."
)
@click.option(
    "--against",
    type=click.Path(path_type=Path),
    default=None,
    help="Compare with this artifact (the fp32 build of a lowered one) instead of PyTorch; "
    "for digits models exit 1 unless accuracy and FD stay within the precision gate.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-q", "--quiet", is_flag=True)
def evaluate(
    artifact: Path,
    images: int,
    quality_samples: int | None,
    steps: int | None,
    guidance: float | None,
    seed: int,
    prompt: str | None,
    threads: int | None,
    min_psnr: float | None,
    against: Path | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Compare an artifact's images with its PyTorch source (same seeds): PSNR and SSIM;
    plus class accuracy and FD for the digits reference models."""
    import math

    from difforge._deps import TORCH_SOURCE, require

    if min_psnr is not None and not math.isfinite(min_psnr):
        raise DifforgeError(f"--min-psnr must be a finite number of dB, got {min_psnr}")

    if against is None:
        require(TORCH_SOURCE)
    from difforge import api
    from difforge.evaluation.run import format_report

    report = api.evaluate(
        artifact,
        images=images,
        quality_samples=quality_samples,
        steps=steps,
        guidance=guidance,
        seed=seed,
        prompt=prompt,
        threads=threads,
        reporter=reporter(quiet or as_json),
        against=against,
    )
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_report(report))
    if min_psnr is not None and report.worst_psnr < min_psnr:
        click.echo(
            f"error: worst PSNR {report.worst_psnr:.2f} dB is below --min-psnr {min_psnr}",
            err=True,
        )
        raise SystemExit(1)
    if report.quality_gate is not None and not report.quality_gate["passed"]:
        click.echo("error: the digits quality gate against the reference failed", err=True)
        raise SystemExit(1)


