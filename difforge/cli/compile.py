"""``export``, ``build`` and ``compile``: model -> verified ONNX -> engine artifact."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from difforge.cli._common import reporter
from difforge.config import (
    BuildConfig,
    CalibrateConfig,
    CompileConfig,
    ExportConfig,
    PrecisionConfig,
    ResolutionRange,
)

F = TypeVar("F", bound=Callable[..., Any])


def export_options(fn: F) -> F:
    opts = [
        click.option("--preset", help="A built-in preset (see `difforge info --presets`)."),
        click.option(
            "--model",
            type=click.Path(path_type=Path),
            help="A diffusers pipeline folder on disk (loaded offline).",
        ),
        click.option(
            "--patch",
            "patches",
            multiple=True,
            metavar="NAME[:K=V,...]",
            help="Apply a patch before export; repeatable.",
        ),
        click.option(
            "--resolution",
            metavar="N|MIN:MAX|MIN:DEFAULT:MAX",
            help="Pixel resolutions to build for.",
        ),
        click.option(
            "--max-batch",
            type=int,
            default=2,
            show_default=True,
            help="Images per call the artifact accepts.",
        ),
        click.option("--opset", type=int, default=20, show_default=True),
        click.option(
            "--seed",
            type=int,
            default=0,
            show_default=True,
            help="Seed for a preset's random weights.",
        ),
        click.option(
            "--scheduler",
            default=None,
            help="Sample with this runtime sampler instead of the model's own scheduler "
            "(ddim, euler, euler-ancestral, dpm++2m, unipc; flow-euler; one of the model's "
            "family; LCM and TCD students keep their own).",
        ),
        click.option("--no-verify", is_flag=True, help="Skip the ONNX Runtime parity check."),
        click.option("--force", is_flag=True, help="Replace OUTPUT if it exists."),
        click.option(
            "-o",
            "--output",
            type=click.Path(path_type=Path),
            required=True,
            help="Folder to write.",
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _export_config(kw: dict[str, Any]) -> ExportConfig:
    return ExportConfig(
        output=kw["output"],
        preset=kw["preset"],
        model=kw["model"],
        patches=list(kw["patches"]),
        resolution=ResolutionRange.parse(kw["resolution"]),
        max_batch=kw["max_batch"],
        opset=kw["opset"],
        seed=kw["seed"],
        verify=not kw["no_verify"],
        force=kw["force"],
        scheduler=kw["scheduler"],
    )


@click.command()
@export_options
@click.option("-q", "--quiet", is_flag=True)
def export(quiet: bool, **kw: Any) -> None:
    """Export each component to ONNX and verify it against PyTorch."""
    from difforge import api

    out = api.export(_export_config(kw), reporter(quiet))
    click.echo(f"exported to {out}")


def build_options(fn: F) -> F:
    """The engine options ``build`` and ``compile`` share."""
    opts = [
        click.option(
            "--backend",
            default="ort",
            show_default=True,
            help="Engine backend (ort: ONNX Runtime CPU; openvino; tensorrt: engines for an "
            "NVIDIA GPU, built where TensorRT is installed).",
        ),
        click.option(
            "--threads",
            type=int,
            default=0,
            show_default=True,
            help="Intra-op threads recorded for the runtime (0: all cores).",
        ),
        click.option(
            "--no-optimize", is_flag=True, help="Skip graph passes (copy the export as is)."
        ),
        click.option(
            "--custom-ops",
            type=click.Choice(["plugin", "inline"]),
            default=None,
            help="Keep difforge's custom-op nodes for a plugin, or inline their standard-op "
            "bodies (default: the backend's; ort inlines).",
        ),
        *precision_options(),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def precision_options() -> list[Callable[[F], F]]:
    return [
        click.option(
            "--precision",
            metavar="P|ROLE=P,...",
            help="fp32, fp16, bf16, int8 or int8-weights; a bare value is the denoiser's, "
            "ROLE=P sets others (denoiser=int8,vae_decoder=fp16).",
        ),
        click.option(
            "--calib-method",
            type=click.Choice(["minmax", "percentile", "entropy"]),
            default="minmax",
            show_default=True,
            help="How INT8 activation ranges are read from the calibration data.",
        ),
        click.option(
            "--calib-prompts",
            type=click.Path(path_type=Path),
            help="Calibration prompts, one per line (default: a small set that ships).",
        ),
        click.option(
            "--calib-samples",
            type=int,
            default=8,
            show_default=True,
            help="Images generated for calibration (a quarter held out for the gate).",
        ),
        click.option(
            "--min-cosine",
            type=float,
            default=0.99,
            show_default=True,
            help="Quality gate: the lowered denoiser's mean cosine similarity to fp32 in "
            "every timestep bucket.",
        ),
        click.option(
            "--sensitivity",
            is_flag=True,
            help="If the gate fails, keep the fewest layer groups in fp32 that make it pass.",
        ),
        click.option("--no-gate", is_flag=True, help="Ship a lowered precision ungated."),
    ]


def _precision_config(kw: dict[str, Any]) -> PrecisionConfig:
    from difforge.calib.precision import parse_precision

    return PrecisionConfig(
        roles=parse_precision(kw.pop("precision")),
        calib_method=kw.pop("calib_method"),
        min_cosine=kw.pop("min_cosine"),
        gate=not kw.pop("no_gate"),
        sensitivity=kw.pop("sensitivity"),
        calib_samples=kw.pop("calib_samples"),
        calib_prompts=kw.pop("calib_prompts"),
    )


@click.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@build_options
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("-q", "--quiet", is_flag=True)
def build(
    source: Path,
    output: Path,
    backend: str,
    threads: int,
    no_optimize: bool,
    custom_ops: str | None,
    force: bool,
    quiet: bool,
    **kw: Any,
) -> None:
    """Build an engine artifact from an export (or calibrated) folder."""
    from difforge import api

    precision = _precision_config(kw)
    out = api.build(
        BuildConfig(
            source=source,
            output=output,
            backend=backend,
            threads=threads,
            optimize=not no_optimize,
            force=force,
            custom_ops=custom_ops,
            precision=precision,
        ),
        reporter(quiet),
    )
    click.echo(f"built {out}")


@click.command(name="compile")
@export_options
@build_options
@click.option("-q", "--quiet", is_flag=True)
def compile_(
    backend: str,
    threads: int,
    no_optimize: bool,
    custom_ops: str | None,
    quiet: bool,
    **kw: Any,
) -> None:
    """Export and build in one go (only the built artifact is kept)."""
    import time

    from difforge import api

    start = time.perf_counter()
    precision = _precision_config(kw)
    out = api.compile(
        CompileConfig(
            precision=precision,
            export=_export_config(kw),
            backend=backend,
            threads=threads,
            optimize=not no_optimize,
            custom_ops=custom_ops,
        ),
        reporter(quiet),
    )
    click.echo(f"compiled {out} in {time.perf_counter() - start:.1f} s")


@click.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@click.option(
    "--samples", type=int, default=8, show_default=True, help="Images to generate and record."
)
@click.option(
    "--prompts",
    type=click.Path(path_type=Path),
    help="Prompts, one per line (default: a small set that ships).",
)
@click.option("--steps", type=int, default=None, help="Sampling steps (default: the model's).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("-q", "--quiet", is_flag=True)
def calibrate(
    source: Path,
    output: Path,
    samples: int,
    prompts: Path | None,
    steps: int | None,
    seed: int,
    force: bool,
    quiet: bool,
) -> None:
    """Record calibration data: generate with the fp32 export on the runtime, keep each
    component's inputs per timestep bucket (for --precision int8 and the quality gates)."""
    from difforge import api

    if seed < 0:
        raise click.BadParameter(f"must be 0 or more, got {seed}", param_hint="--seed")
    out = api.calibrate(
        CalibrateConfig(
            source=source,
            output=output,
            samples=samples,
            prompts=prompts,
            steps=steps,
            seed=seed,
            force=force,
        ),
        reporter(quiet),
    )
    click.echo(f"calibrated {out}")
