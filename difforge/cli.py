"""The ``difforge`` command line: parse options into config objects and call the API.

User errors (:class:`DifforgeError`) print one line and exit 2; ``--debug`` shows their
traceback. Anything else is a bug and keeps its traceback. SIGTERM is turned into an
exception so that a killed build removes its staging folder like an interrupted one.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from difforge._version import __version__
from difforge.config import BuildConfig, CompileConfig, ExportConfig, ResolutionRange
from difforge.errors import DifforgeError

F = TypeVar("F", bound=Callable[..., Any])
EXIT_USER_ERROR = 2


def _fail(message: str) -> NoReturn:
    click.echo(f"difforge: error: {message}", err=True)
    sys.exit(EXIT_USER_ERROR)


def _on_sigterm(signum: int, frame: Any) -> NoReturn:
    raise SystemExit(128 + signum)


def _reporter(quiet: bool) -> Any:
    from difforge._progress import RichReporter, SilentReporter

    return SilentReporter() if quiet else RichReporter()


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
    )


class DifforgeGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        debug = "--debug" in sys.argv[1:]
        signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            return super().invoke(ctx)
        except DifforgeError as exc:
            if debug:
                raise
            _fail(str(exc))
        except ImportError as exc:
            from difforge._deps import missing_extra_message

            message = missing_extra_message(ctx.invoked_subcommand, exc)
            if message is None or debug:
                raise
            _fail(message)
        except KeyboardInterrupt:
            click.echo("difforge: interrupted", err=True)
            sys.exit(130)


@click.group(cls=DifforgeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="difforge")
@click.option("--debug", is_flag=True, help="Show tracebacks for user errors too.")
def cli(debug: bool) -> None:
    """difforge: compile patched diffusion models into deployable artifacts and run them."""


@cli.command()
@export_options
@click.option("-q", "--quiet", is_flag=True)
def export(quiet: bool, **kw: Any) -> None:
    """Export each component to ONNX and verify it against PyTorch."""
    from difforge import api

    out = api.export(_export_config(kw), _reporter(quiet))
    click.echo(f"exported to {out}")


@cli.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@click.option("--backend", default="ort", show_default=True, help="Engine backend.")
@click.option(
    "--threads",
    type=int,
    default=0,
    show_default=True,
    help="Intra-op threads recorded for the runtime (0: all cores).",
)
@click.option("--no-optimize", is_flag=True, help="Skip graph passes (copy the export as is).")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("-q", "--quiet", is_flag=True)
def build(
    source: Path,
    output: Path,
    backend: str,
    threads: int,
    no_optimize: bool,
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
        ),
        _reporter(quiet),
    )
    click.echo(f"built {out}")


@cli.command(name="compile")
@export_options
@click.option("--backend", default="ort", show_default=True)
@click.option("--threads", type=int, default=0, show_default=True)
@click.option("--no-optimize", is_flag=True)
@click.option("-q", "--quiet", is_flag=True)
def compile_(backend: str, threads: int, no_optimize: bool, quiet: bool, **kw: Any) -> None:
    """Export and build in one go (only the built artifact is kept)."""
    import time

    from difforge import api

    start = time.perf_counter()
    out = api.compile(
        CompileConfig(
            export=_export_config(kw), backend=backend, threads=threads, optimize=not no_optimize
        ),
        _reporter(quiet),
    )
    click.echo(f"compiled {out} in {time.perf_counter() - start:.1f} s")


@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--prompt", default="", help="Text prompt (text-to-image artifacts).")
@click.option("--negative-prompt", default="")
@click.option("--class-label", type=int, default=None, help="Class (class-to-image artifacts).")
@click.option(
    "--classes",
    default=None,
    help="Several classes as one grid, rows of up to 10: '0-9', '3,1,4', '0-9,0-9'.",
)
@click.option("--steps", type=int, default=None, help="Sampler steps (default: the artifact's).")
@click.option(
    "--guidance",
    type=float,
    default=None,
    help="Guidance scale (classifier-free, or the embedded scale of a distilled student).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--height", type=int, default=None)
@click.option("--width", type=int, default=None)
@click.option("--resolution", type=int, default=None, help="Sets height and width.")
@click.option("--scheduler", default=None, help="ddim, euler, euler-ancestral, flow-euler.")
@click.option("--threads", type=int, default=None, help="Intra-op threads (default: as built).")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("out.png"),
    show_default=True,
    help="Image file; its suffix picks the format (.png, .jpg, .webp, ...).",
)
@click.option("--json", "as_json", is_flag=True, help="Print timings as JSON.")
@click.option("-q", "--quiet", is_flag=True)
def run(
    artifact: Path,
    prompt: str,
    negative_prompt: str,
    class_label: int | None,
    classes: str | None,
    steps: int | None,
    guidance: float | None,
    seed: int,
    height: int | None,
    width: int | None,
    resolution: int | None,
    scheduler: str | None,
    threads: int | None,
    out: Path,
    as_json: bool,
    quiet: bool,
) -> None:
    """Generate an image with an artifact (numpy + onnxruntime only)."""
    from difforge.runtime import GenerateRequest, load
    from difforge.runtime.image import grid, image_format, save_image

    image_format(out)  # a bad --out fails now, not after the generation
    if resolution is not None and (height is not None or width is not None):
        raise DifforgeError("--resolution sets both height and width; give it or them, not both")
    if resolution is not None:
        height = width = resolution
    settings: dict[str, Any] = {
        "steps": steps,
        "guidance_scale": guidance,
        "scheduler": scheduler,
        "height": height,
        "width": width,
    }
    pipe = load(artifact, threads=threads)
    if classes is not None:
        if class_label is not None or prompt or negative_prompt:
            raise DifforgeError("--classes takes no --class-label, --prompt or --negative-prompt")
        labels = parse_classes(classes)
        images, timings = run_classes(pipe, labels, seed, **settings)
        image = grid(images, columns=min(10, len(labels)), gap=2, fill=255)
        save_image(image, out)
        if as_json:
            click.echo(json.dumps({"out": str(out), "classes": labels, "timings": timings}))
            return
        click.echo(f"wrote {out} ({len(labels)} images, {image.shape[1]}x{image.shape[0]})")
        return
    request = GenerateRequest(
        prompt=prompt,
        negative_prompt=negative_prompt,
        class_label=class_label,
        seed=seed,
        **settings,
    )
    resolved = pipe.resolve(request)
    for note in pipe.prompt_notes(request):
        click.echo(f"note: {note}", err=True)
    if not quiet and not as_json:
        with click.progressbar(
            length=resolved.steps or 0, label="denoising", file=sys.stderr
        ) as bar:
            result = pipe(request, callback=lambda i, n: bar.update(1))
    else:
        result = pipe(request)
    image = result.images[0] if len(result.images) == 1 else grid(result.images)
    save_image(image, out)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "out": str(out),
                    "timings": result.timings,
                    "step_seconds": result.step_seconds,
                    **result.request,
                }
            )
        )
        return
    click.echo(f"wrote {out} ({image.shape[1]}x{image.shape[0]})")
    if not quiet:
        click.echo(format_timings(result.timings, len(result.step_seconds)))


def parse_classes(text: str) -> list[int]:
    """'0-9,3' -> [0, 1, ..., 9, 3]."""
    labels: list[int] = []
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            if sep:
                first, last = int(lo), int(hi)
                if first > last:
                    raise ValueError
                labels.extend(range(first, last + 1))
            else:
                labels.append(int(part))
        except ValueError:
            raise DifforgeError(
                f"--classes takes numbers and ranges like '0-9' or '3,1,4', got {text!r}"
            ) from None
    if not labels:
        raise DifforgeError("--classes names no class")
    return labels


def run_classes(
    pipe: Any, labels: list[int], seed: int, **settings: Any
) -> tuple[Any, dict[str, float]]:
    """Generate one image per label, in as few calls as the artifact's batch range allows;
    ``settings`` are the other ``GenerateRequest`` fields (steps, guidance_scale, ...)."""
    import numpy as np

    from difforge.runtime import GenerateRequest

    if pipe.kind != "class-to-image":
        raise DifforgeError(f"--classes needs a class-to-image artifact; this one is {pipe.kind}")
    first = pipe.resolve(GenerateRequest(class_label=labels[0], seed=seed, **settings))
    per_call = pipe.images_per_call(first.guidance_scale)
    requests = [
        GenerateRequest(class_label=labels[start : start + per_call], seed=seed + i, **settings)
        for i, start in enumerate(range(0, len(labels), per_call))
    ]
    for request in requests:  # every label checked before the first image
        pipe.resolve(request)
    images, total = [], 0.0
    for request in requests:
        result = pipe(request)
        images.append(result.images)
        total += result.timings["total"]
    return np.concatenate(images), {"total": total}


def format_timings(timings: dict[str, float], steps: int) -> str:
    rows = [("stage", "ms")]
    for key, value in timings.items():
        label = f"{key} ({steps} steps)" if key == "denoiser" else key
        rows.append((label, f"{value * 1000:.1f}"))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{a:<{width}}  {b:>9}" for a, b in rows)


@cli.command(name="eval")
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
    as_json: bool,
    quiet: bool,
) -> None:
    """Compare an artifact's images with its PyTorch source (same seeds): PSNR and SSIM;
    plus class accuracy and FD for the digits reference models."""
    from difforge._deps import TORCH_SOURCE, require

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
        reporter=_reporter(quiet or as_json),
    )
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_report(report))
    if min_psnr is not None and report.worst_psnr < min_psnr:
        click.echo(
            f"error: worst PSNR {report.worst_psnr:.2f} dB is below --min-psnr {min_psnr}",
            err=True,
        )
        raise SystemExit(1)


@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option("--presets", is_flag=True, help="List the built-in presets.")
@click.option("--patches", is_flag=True, help="List the patches and their options.")
def info(artifact: Path | None, as_json: bool, presets: bool, patches: bool) -> None:
    """Describe an artifact (from its manifest), or list presets or patches."""
    if artifact is not None and (presets or patches):
        raise DifforgeError("give an artifact, or --presets / --patches, not both")
    if presets and patches:
        raise DifforgeError("give --presets or --patches, not both")
    if patches:
        from difforge.export.patches.catalog import catalog, format_catalog

        entries = catalog()
        click.echo(json.dumps(entries, indent=2) if as_json else format_catalog(entries))
        return
    if presets or artifact is None:
        from difforge.export.sources.presets import DESCRIPTIONS

        if as_json:
            listing = [
                {"name": k, "summary": v, "weights": "random"} for k, v in DESCRIPTIONS.items()
            ]
            click.echo(json.dumps(listing, indent=2))
            return
        for name, text in DESCRIPTIONS.items():
            click.echo(f"{name:<12} {text} (random weights)")
        return
    from difforge import api
    from difforge.manifest_view import describe

    manifest = api.info(artifact)
    click.echo(json.dumps(manifest.to_dict(), indent=2) if as_json else describe(manifest))


def _register_report_commands() -> None:
    from difforge.profile.cli import bench_command, profile_command

    cli.add_command(profile_command)
    cli.add_command(bench_command)


_register_report_commands()


def main() -> None:
    cli(prog_name="difforge")


if __name__ == "__main__":
    main()
