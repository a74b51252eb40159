"""The report's schema, validation and the three output files."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from difforge.errors import DifforgeError

SCHEMA_NAME = "difforge-profile-report"
SCHEMA_VERSION = 2


def schema() -> dict[str, Any]:
    text = (
        resources.files("difforge.profile")
        .joinpath("schema/report.schema.json")
        .read_text(encoding="utf-8")
    )
    data: dict[str, Any] = json.loads(text)
    return data


def validate(report: dict[str, Any]) -> None:
    """Raise ``DifforgeError`` naming the first field that breaks the schema."""
    try:
        import jsonschema
    except ImportError:
        raise DifforgeError(
            "jsonschema is not installed; install difforge[bench] to write profile reports"
        ) from None
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(report), key=lambda e: list(e.absolute_path))
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(root)"
        raise DifforgeError(
            f"profile report does not match its schema at {where}: {errors[0].message}"
        )


def write_reports(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Validate, then write report.json, report.md and report.html into ``out``."""
    from difforge.profile import render_html, render_md

    validate(report)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DifforgeError(f"cannot create {out}: {exc.strerror}") from None
    paths = {
        "json": out / "report.json",
        "md": out / "report.md",
        "html": out / "report.html",
    }
    paths["json"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    paths["md"].write_text(render_md.render(report), encoding="utf-8")
    paths["html"].write_text(render_html.render(report), encoding="utf-8")
    return paths
