"""`difforge info --presets / --patches`: what a user reads before choosing --preset and --patch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from difforge.cli import cli
from difforge.errors import DifforgeError
from difforge.patches import available_patches, create_patch, get_patch_class
from difforge.sources.presets import DESCRIPTIONS


def test_patch_listing_names_every_patch_and_option() -> None:
    done = CliRunner().invoke(cli, ["info", "--patches"])
    assert done.exit_code == 0, done.output
    for name in available_patches():
        assert f"\n{name}: " in "\n" + done.output
        for option in get_patch_class(name).option_specs:
            assert f"  {option.name} " in done.output, (name, option.name)
    assert "radius             int 1.." in done.output  # bounds shown as the parser enforces them


def test_patch_listing_as_json_describes_what_create_patch_accepts() -> None:
    done = CliRunner().invoke(cli, ["info", "--patches", "--json"])
    entries = json.loads(done.output)
    assert [e["name"] for e in entries] == available_patches()
    for entry in entries:
        for option, spec in entry["options"].items():
            if spec["type"] == "int" and spec.get("minimum") is not None:
                # The listed minimum is accepted, one below it is not.
                least = int(spec["minimum"])
                create_patch(f"{entry['name']}:{option}={least}")
                with pytest.raises(DifforgeError, match="below the minimum"):
                    create_patch(f"{entry['name']}:{option}={least - 1}")


def test_preset_listing_as_json() -> None:
    done = CliRunner().invoke(cli, ["info", "--presets", "--json"])
    assert [p["name"] for p in json.loads(done.output)] == list(DESCRIPTIONS)


def test_listing_and_artifact_together_is_refused(tmp_path: Path) -> None:
    done = CliRunner().invoke(cli, ["info", str(tmp_path), "--patches"])
    assert done.exit_code == 2 and "not both" in done.output


def test_info_says_whether_this_install_runs_the_artifact(
    tiny_sd_artifact: Path, tmp_path: Path
) -> None:
    import shutil

    done = CliRunner().invoke(cli, ["info", str(tiny_sd_artifact)])
    assert done.exit_code == 0 and done.output.rstrip().endswith("runs here: yes (ort)")
    copy = tmp_path / "art"
    shutil.copytree(tiny_sd_artifact, copy)
    data = json.loads((copy / "manifest.json").read_text())
    data["components"]["denoiser"]["engine"]["settings"]["profile_prefix"] = "/tmp/p"
    (copy / "manifest.json").write_text(json.dumps(data))
    done = CliRunner().invoke(cli, ["info", str(copy)])
    assert done.exit_code == 0, done.output
    last = done.output.rstrip().splitlines()[-1]
    assert last.startswith("runs here: no: manifest.json: components.denoiser.engine.settings")
