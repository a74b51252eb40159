"""``doctor`` and ``cache``: what this machine can build and run; the TensorRT engine cache."""

from __future__ import annotations

import json
import sys

import click


@click.command(name="doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor_command(as_json: bool) -> None:
    """What this machine can build and run: providers, TensorRT, GPU, plugins, engine cache."""
    from difforge.profile.doctor import doctor, render

    report = doctor()
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        click.echo(render(report))


@click.group(name="cache")
def cache_group() -> None:
    """The TensorRT engine cache ($DIFFORGE_ENGINE_CACHE, default ~/.cache/difforge/engines)."""


@cache_group.command(name="ls")
def cache_ls() -> None:
    """List cached engines: key digest, size, TensorRT version, GPU, precision, last use."""
    import datetime as dt

    from difforge.engines.tensorrt.cache import EngineCache

    cache = EngineCache()
    entries = cache.entries()
    click.echo(f"{cache.root}: {len(entries)} engines")
    for e in entries:
        used = dt.datetime.fromtimestamp(e.last_used).isoformat(timespec="seconds")
        k = e.key
        click.echo(
            f"{e.digest}  {e.size / 1e6:8.1f} MB  TensorRT {k.get('tensorrt', '?')}  "
            f"sm {k.get('compute_capability', '?')}  {k.get('precision', '?')}  used {used}"
        )


@cache_group.command(name="gc")
@click.option("--older-than", type=float, default=None, metavar="DAYS",
              help="Remove engines unused for this many days (default: remove every engine).")
def cache_gc(older_than: float | None) -> None:
    """Remove cached engines (all, or those unused for --older-than days)."""
    from difforge.engines.tensorrt.cache import EngineCache
    from difforge.errors import DifforgeError

    if older_than is not None and older_than < 0:
        raise DifforgeError(f"--older-than must be 0 days or more, got {older_than}")
    removed = EngineCache().gc(older_than)
    click.echo(f"removed {len(removed)} engines ({sum(e.size for e in removed) / 1e6:.1f} MB)")
