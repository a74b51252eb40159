"""Artifact folders appear whole or not at all: built in a hidden sibling, then renamed.

The hidden siblings are named ``.NAME.KIND-PID-XXXX`` (KIND: partial, export, old), so a later
run for the same target removes those a killed process (SIGKILL, a power cut) left behind, and
never one a running process still writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from difforge.errors import DifforgeError

KINDS = ("partial", "export", "old")


def scratch_folder(target: Path, kind: str) -> Path:
    """A new hidden folder beside ``target`` for this process's work of ``kind``."""
    prefix = f".{target.name}.{kind}-{os.getpid()}-"
    return Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale(target: Path) -> list[Path]:
    """Remove the hidden folders of ``target`` whose process (on this machine) is gone;
    returns them."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(?:{'|'.join(KINDS)})-(\d+)-")
    removed: list[Path] = []
    try:
        siblings = list(target.parent.iterdir())
    except OSError:  # no such folder yet, or not ours to list: nothing to clean
        return removed
    for sibling in siblings:
        match = pattern.match(sibling.name)
        if match and sibling.is_dir() and not sibling.is_symlink():
            pid = int(match.group(1))
            if pid != os.getpid() and not _alive(pid):
                shutil.rmtree(sibling, ignore_errors=True)
                removed.append(sibling)
    return removed


def check_target(target: Path, force: bool) -> None:
    """Refuse before any work: an existing target without ``force``, an unwritable folder.
    Hidden folders a killed earlier run for the same target left behind are removed."""
    remove_stale(target)
    if target.exists() and not force:
        raise DifforgeError(f"{target} already exists (use --force to replace it)")
    if target.exists() and not target.is_dir():
        raise DifforgeError(f"{target} exists and is not a folder")
    if target.exists() and not _replaceable(target):
        # --force replaces an artifact; it must never delete a folder of the user's own.
        raise DifforgeError(
            f"{target} is a folder with files that are not a difforge artifact; "
            "--force replaces only artifacts and empty folders (choose another output)"
        )
    parent = target.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise DifforgeError(f"cannot write {target}: {probe} is not a writable folder")


def _replaceable(folder: Path) -> bool:
    """An empty folder, or one whose manifest says it is a difforge export or artifact."""
    from difforge.artifact.manifest import FORMAT, MANIFEST_NAME

    if not any(folder.iterdir()):
        return True
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


@contextlib.contextmanager
def staged_folder(target: Path, force: bool = False) -> Iterator[Path]:
    """Yield an empty hidden folder next to ``target``; on success it becomes ``target``.

    On any exception (Ctrl-C and SIGTERM included, which the CLI turns into exceptions) the
    staging folder is removed and ``target`` is left as it was.
    """
    check_target(target, force)
    with replaced_on_success(target) as staging:
        yield staging


@contextlib.contextmanager
def replaced_on_success(target: Path) -> Iterator[Path]:
    """An empty hidden folder next to ``target`` that replaces it on success and is removed
    on any exception; whether ``target`` may be replaced is the caller's check."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = scratch_folder(target, "partial")
    except OSError as exc:
        raise DifforgeError(f"cannot write {target}: {exc.strerror or exc}") from None
    # mkdtemp makes the folder private; the artifact should get the usual permissions.
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    try:
        yield staging
        if target.exists():
            old = scratch_folder(target, "old")
            os.replace(target, old / target.name)
            try:
                os.replace(staging, target)
            except BaseException:
                os.replace(old / target.name, target)  # the old one back where it was
                shutil.rmtree(old, ignore_errors=True)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
