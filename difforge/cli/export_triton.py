"""``export-triton``: an artifact as an NVIDIA Triton Inference Server model repository."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("export-triton")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True,
    help="The model repository folder to write.",
)
@click.option("--force", is_flag=True, help="Replace an existing repository difforge wrote.")
@click.option(
    "--instances", type=int, default=1, show_default=True,
    help="Instances of each model (Triton's instance_group count).",
)
@click.option(
    "--pipeline-name", default="pipeline", show_default=True,
    help="Name of the Python-backend model that runs the sampling loop.",
)
def export_triton_command(
    artifact: Path, output: Path, force: bool, instances: int, pipeline_name: str
) -> None:
    """Write a Triton model repository: one model per component graph (ONNX Runtime or
    TensorRT backend) and a Python-backend model running the sampling loop through BLS."""
    from difforge.serve.triton.repository import export_triton

    result = export_triton(
        artifact, output, force=force, instances=instances, pipeline_name=pipeline_name
    )
    click.echo(
        f"wrote {result.output} ({len(result.models)} models, {result.files} files, "
        f"{result.bytes / 1e6:.1f} MB)"
    )
    for name, what in result.models.items():
        click.echo(f"  {name}: {what}")
