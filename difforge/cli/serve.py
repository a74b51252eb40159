"""``serve``: an artifact behind Ray Serve's HTTP proxy until SIGINT or SIGTERM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


@click.command(name="serve")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--replicas", type=int, default=1, show_default=True, help="Replicas to run.")
@click.option(
    "--max-batch",
    type=int,
    default=None,
    help="Most images one batched call holds, across clients (default: what the artifact "
    "takes per call at its default guidance; 1 turns batching off).",
)
@click.option("--batch-wait-ms", type=float, default=10.0, show_default=True,
              help="How long a batch waits to fill once its first request arrived.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option(
    "--address",
    default=None,
    help="An existing Ray cluster ('auto', HOST:PORT, ray://HOST:PORT); the artifact must be "
    "at the same path on its nodes. Default: a local cluster made for this server.",
)
@click.option("--threads", type=int, default=None,
              help="Intra-op threads per replica (default: the cores shared among replicas).")
@click.option("--shutdown-timeout", type=float, default=60.0, show_default=True,
              help="Seconds a stopping replica waits for its requests in flight.")
def serve_command(
    artifact: Path,
    replicas: int,
    max_batch: int | None,
    batch_wait_ms: float,
    host: str,
    port: int,
    address: str | None,
    threads: int | None,
    shutdown_timeout: float,
) -> None:
    """Serve an artifact over HTTP (Ray Serve): POST /generate, GET /health, GET /ready."""
    from difforge.api import ServeOptions, serve_http
    from difforge.serve.rayserve.cluster import Plan, Stopper

    def ready(url: str, plan: Plan) -> None:
        threads = f"{plan.threads} thread(s)" if plan.threads else "ONNX Runtime's threads"
        click.echo(
            f"serving {artifact} at {url} ({replicas} replica(s), {threads} each, batches of "
            f"up to {plan.max_batch} image(s)); Ctrl-C or SIGTERM drains and stops",
            err=True,
        )
        click.echo(f"ready {url}")

    stopper = Stopper()
    options: dict[str, Any] = {
        "replicas": replicas, "max_batch": max_batch, "host": host, "port": port,
        "address": address, "threads": threads, "batch_wait_ms": batch_wait_ms,
        "shutdown_timeout_s": shutdown_timeout,
    }
    serve_http(ServeOptions(artifact, **options), on_ready=ready, stopper=stopper)
    click.echo(
        f"stopped (requests in flight had up to {shutdown_timeout:g} s to finish)", err=True
    )
