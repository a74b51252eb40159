"""The files of an artifact: their sha256 and size, recorded at write time and checked at load.

Every path an artifact names (the ``files`` table, component graphs, engine files, tokenizer
files) is relative, '/'-separated and free of ``..``, and is opened only after it is checked to
lie inside the artifact folder with no symbolic link on the way: a downloaded artifact cannot
make difforge read or write outside its own folder. Files the manifest does not list are
ignored: nothing of difforge opens them.
"""

from __future__ import annotations

import hashlib
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from difforge.artifact.fields import Fields
from difforge.errors import DifforgeError

_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_PATH_CHARS = 512


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
    if (
        not rel
        or len(rel) > MAX_PATH_CHARS
        or rel.startswith("/")
        or "\\" in rel
        or any(ord(ch) < 32 for ch in rel)
        or any(p in ("..", ".", "") for p in parts)
        or rel.endswith("/")
    ):
        raise DifforgeError(f"manifest.json: {where}: {rel!r} is not a path inside the artifact")
    return rel


def inside(root: Path, rel: str) -> Path:
    """``root / rel``, after checking that no part of the way is a symbolic link and that it
    resolves inside ``root`` (call before opening anything an artifact names)."""
    check_relative(rel, "path")
    path = root
    for part in PurePosixPath(rel).parts:
        path = path / part
        if path.is_symlink():
            raise DifforgeError(f"artifact path {rel} goes through a link (artifacts hold none)")
    base = root.resolve()
    if base not in path.resolve().parents:
        raise DifforgeError(f"artifact path {rel} lies outside the artifact folder")
    return path


def read_file_records(f: Fields | None) -> dict[str, FileRecord]:
    if f is None:
        return {}
    out: dict[str, FileRecord] = {}
    for rel, value in f.data.items():
        where = f"files.{rel}"
        check_relative(str(rel), where)
        entry = Fields(value, where)
        digest = entry.text("sha256")
        if not _SHA256.fullmatch(digest):
            raise entry.fail("sha256", "expected 64 lowercase hex digits")
        out[str(rel)] = FileRecord(digest, entry.integer("bytes", minimum=0))
    return out


def check_paths(root: Path, referenced: Iterable[str], files: dict[str, FileRecord]) -> None:
    """Every path the manifest names is listed in its files and lies inside ``root``."""
    for rel in referenced:
        if rel not in files:
            raise DifforgeError(f"manifest names {rel} but does not hash it")
    for rel in files:
        inside(root, rel)


def verify_files(root: Path, files: dict[str, FileRecord]) -> None:
    """Refuse an artifact whose listed files are missing, not regular files, or changed since
    it was written (sizes first, then sha256)."""
    if not files:
        raise DifforgeError(f"{root / 'manifest.json'} lists no files; the artifact is incomplete")
    for rel, record in files.items():
        path = inside(root, rel)
        try:
            info = path.lstat()
        except OSError:
            raise DifforgeError(f"artifact file missing: {rel}") from None
        if not stat.S_ISREG(info.st_mode):
            raise DifforgeError(f"artifact file is not a regular file: {rel}")
        if info.st_size != record.bytes:
            raise DifforgeError(f"artifact file changed (size differs from the manifest): {rel}")
    for rel, record in files.items():
        if sha256_file(root / rel) != record.sha256:
            raise DifforgeError(f"artifact file changed (sha256 differs from the manifest): {rel}")
