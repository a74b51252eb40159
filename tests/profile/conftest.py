"""One profile of the session's tiny-sd artifact, made through the CLI, shared by the tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def profile_out(tiny_sd_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from click.testing import CliRunner

    from difforge.cli.profile import profile_command

    out = tmp_path_factory.mktemp("profile") / "report"
    result = CliRunner().invoke(
        profile_command,
        [
            str(tiny_sd_artifact),
            "--runs",
            "3",
            "--warmup",
            "1",
            "--steps",
            "4",
            "--resolution",
            "128",
            "--sweep",
            "128,256",
            "--threads",
            "2",
            "--out",
            str(out),
            "--json",
            "-q",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed == json.loads((out / "report.json").read_text(encoding="utf-8"))
    return out


@pytest.fixture(scope="session")
def report(profile_out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((profile_out / "report.json").read_text(encoding="utf-8"))
    return data
