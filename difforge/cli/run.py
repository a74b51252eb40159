"""``run``: generate images with an artifact (numpy and the engine's runtime only)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from difforge.errors import DifforgeError


@click.command()
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
@click.option(
    "--scheduler",
    default=None,
    help="Another sampler of the model's family: ddim, euler, euler-ancestral, dpm++2m, unipc "
    "(noise prediction); flow-euler (flow matching). LCM and TCD students keep their own.",
)
@click.option("--threads", type=int, default=None, help="Intra-op threads (default: as built).")
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda", "tensorrt"]),
    default=None,
    help="ONNX Runtime artifacts: run on the CPU, CUDA, or TensorRT execution provider "
    "(the GPU ones need onnxruntime-gpu; default: as built).",
)
@click.option(
    "--provider",
    "provider_names",
    multiple=True,
    metavar="NAME",
    help="ONNX Runtime execution providers by name, in order (instead of --device).",
)
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
    device: str | None,
    provider_names: tuple[str, ...],
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
    if classes is not None and (class_label is not None or prompt or negative_prompt):
        raise DifforgeError("--classes takes no --class-label, --prompt or --negative-prompt")
    labels = parse_classes(classes) if classes is not None else []
    if device is not None and provider_names:
        raise DifforgeError("--device and --provider both choose providers; give one")
    chosen: list[str] | None = list(provider_names) or None
    if device is not None:
        from difforge.runtime.runners._ort_settings import DEVICES

        chosen = DEVICES[device]
    pipe = load(artifact, threads=threads, providers=chosen)
    if classes is not None:
        for note in pipe.notes:
            click.echo(f"note: {note}", err=True)
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
    for note in pipe.notes + pipe.prompt_notes(request):
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


#: images one ``--classes`` grid may hold (checked before the ranges are expanded)
MAX_GRID = 1000


def parse_classes(text: str) -> list[int]:
    """'0-9,3' -> [0, 1, ..., 9, 3]; at most :data:`MAX_GRID` labels."""
    spans: list[range] = []
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            first, last = (int(lo), int(hi)) if sep else (int(part), int(part))
        except ValueError:
            first, last = 1, 0
        if first < 0 or first > last:
            raise DifforgeError(
                f"--classes takes class numbers and ranges like '0-9' or '3,1,4', got {text!r}"
            )
        spans.append(range(first, last + 1))
    count = sum(len(span) for span in spans)
    if count > MAX_GRID:
        raise DifforgeError(f"--classes names {count} images; one grid holds at most {MAX_GRID}")
    return [label for span in spans for label in span]


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


