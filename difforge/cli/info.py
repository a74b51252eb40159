"""``info``: an artifact's manifest, readably; or the presets; or the patches."""

from __future__ import annotations

import json
from pathlib import Path

import click

from difforge.errors import DifforgeError


@click.command()
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
        from difforge.patches.catalog import catalog, format_catalog

        entries = catalog()
        click.echo(json.dumps(entries, indent=2) if as_json else format_catalog(entries))
        return
    if presets or artifact is None:
        from difforge.sources.presets import DESCRIPTIONS

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
    from difforge.artifact.view import describe

    manifest = api.info(artifact)
    if as_json:
        click.echo(json.dumps(manifest.to_dict(), indent=2))
        return
    click.echo(describe(manifest))
    click.echo(f"runs here: {runs_here(artifact)}")


def runs_here(artifact: Path) -> str:
    """Whether this install would run the artifact: the runtime's own checks (runner for each
    backend, recorded settings, library versions), without making a session."""
    from difforge.runtime import load

    try:
        pipe = load(artifact, lazy=True)
    except DifforgeError as err:
        return f"no: {err}"
    backends = sorted({r.backend for r in pipe.runners.values()})
    notes = "".join(f"; note: {n}" for n in pipe.notes)
    return f"yes ({', '.join(backends)}){notes}"


