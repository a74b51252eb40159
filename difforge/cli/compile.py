"""``export``, ``build`` and ``compile``: model -> verified ONNX -> engine artifact."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from difforge.cli._common import reporter
from difforge.config import BuildConfig, CompileConfig, ExportConfig, ResolutionRange

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
            "(ddim, euler, euler-ancestral, flow-euler; one of the model's family).",
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
            help="Engine backend (ort: ONNX Runtime CPU).",
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
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


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
) -> None:
    """Build an engine artifact from an export folder."""
    from difforge import api

    out = api.build(
        BuildConfig(
            source=source,
            output=output,
            backend=backend,
            threads=threads,
            optimize=not no_optimize,
            force=force,
            custom_ops=custom_ops,
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
    out = api.compile(
        CompileConfig(
            export=_export_config(kw),
            backend=backend,
            threads=threads,
            optimize=not no_optimize,
            custom_ops=custom_ops,
        ),
        reporter(quiet),
    )
    click.echo(f"compiled {out} in {time.perf_counter() - start:.1f} s")
