"""Staging folders: a target is replaced only once its replacement is complete, and kept when
the replacement fails at any point."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from difforge.artifact import staging
from difforge.artifact.staging import replaced_on_success


def hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_success_replaces_the_target(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with replaced_on_success(target) as stage:
        (stage / "new.txt").write_text("new")
        assert (target / "old.txt").exists()  # untouched until the end
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert hidden(tmp_path) == []


def test_a_failure_inside_keeps_the_target(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt), replaced_on_success(target) as stage:
        (stage / "new.txt").write_text("new")
        raise KeyboardInterrupt
    assert (target / "old.txt").read_text() == "old"
    assert hidden(tmp_path) == []


def test_a_failed_swap_puts_the_old_target_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    real = os.replace

    def replace(src: str | Path, dst: str | Path) -> None:
        if Path(dst) == target and ".partial" in Path(src).name:
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(staging.os, "replace", replace)
    with pytest.raises(OSError), replaced_on_success(target) as stage:
        (stage / "new.txt").write_text("new")
    assert (target / "old.txt").read_text() == "old"
    assert hidden(tmp_path) == []
