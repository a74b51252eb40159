"""Artifact folders appear whole or not at all: built in a hidden sibling, then renamed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from difforge.errors import DifforgeError

PARTIAL = ".partial-"


def check_target(target: Path, force: bool) -> None:
    """Refuse before any work: an existing target without ``force``, an unwritable folder."""
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
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}{PARTIAL}", dir=target.parent))
    except OSError as exc:
        raise DifforgeError(f"cannot write {target}: {exc.strerror or exc}") from None
    # mkdtemp makes the folder private; the artifact should get the usual permissions.
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    try:
        yield staging
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / target.name)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
