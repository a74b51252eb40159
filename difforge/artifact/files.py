"""The files of an artifact: their sha256 and size, recorded at write time and checked at load."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from difforge.artifact.fields import Fields
from difforge.errors import DifforgeError


@dataclass(frozen=True)
class FileRecord:
    sha256: str
    bytes: int


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_folder(root: Path, exclude: str = "") -> dict[str, FileRecord]:
    """sha256 and size of every file under ``root`` except ``exclude`` (the manifest)."""
    out: dict[str, FileRecord] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel != exclude:
            out[rel] = FileRecord(sha256_file(path), path.stat().st_size)
    return out


def check_relative(rel: str, where: str) -> str:
    """A path inside the artifact folder: relative, '/'-separated, no '..' or empty parts."""
    parts = PurePosixPath(rel).parts
    if not rel or rel.startswith("/") or "\\" in rel or any(p in ("..", ".", "") for p in parts):
        raise DifforgeError(f"manifest.json: {where}: {rel!r} is not a path inside the artifact")
    return rel


def read_file_records(f: Fields | None) -> dict[str, FileRecord]:
    if f is None:
        return {}
    out: dict[str, FileRecord] = {}
    for rel, value in f.data.items():
        entry = Fields(value, f"files.{rel}")
        out[check_relative(str(rel), f"files.{rel}")] = FileRecord(
            entry.text("sha256"), entry.integer("bytes", minimum=0)
        )
    return out


def verify_files(root: Path, files: dict[str, FileRecord], required: Iterable[str]) -> None:
    """Refuse an artifact whose files are missing or changed since it was written, or whose
    components name a file the manifest does not hash."""
    if not files:
        raise DifforgeError(f"{root / 'manifest.json'} lists no files; the artifact is incomplete")
    for rel, record in files.items():
        path = root / rel
        if path.is_symlink():
            raise DifforgeError(f"artifact file is a link, which artifacts never hold: {rel}")
        if not path.is_file():
            raise DifforgeError(f"artifact file missing: {rel}")
        if path.stat().st_size != record.bytes:
            raise DifforgeError(f"artifact file changed (size differs from the manifest): {rel}")
        if sha256_file(path) != record.sha256:
            raise DifforgeError(f"artifact file changed (sha256 differs from the manifest): {rel}")
    for rel in required:
        if rel not in files:
            raise DifforgeError(f"manifest names {rel} but does not hash it")
