"""Rewrite the delimited bench block of docs/perf.md, leaving the rest of the file alone."""

from __future__ import annotations

import os
from pathlib import Path

from difforge.errors import DifforgeError

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def markers(name: str = "bench") -> tuple[str, str]:
    """The begin and end markers of the block called ``name`` (``bench`` by default)."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_block(text: str, block: str, name: str = "bench") -> str:
    """``text`` with everything between the markers replaced (markers appended if absent)."""
    begin, end_marker = markers(name)
    body = f"{begin}\n{block.strip()}\n{end_marker}"
    start, end = text.find(begin), text.find(end_marker)
    if start == -1 and end == -1:
        return text.rstrip("\n") + "\n\n" + body + "\n"
    if start == -1 or end == -1 or end < start:
        raise DifforgeError(f"unbalanced {begin} / {end_marker} markers")
    return text[:start] + body + text[end + len(end_marker) :]


def check_perf_doc(path: Path, name: str = "bench") -> None:
    """Fail now, not after minutes of benchmarking, if ``path`` could not take the block."""
    if path.is_dir():
        raise DifforgeError(f"--out {path} is a folder; give a Markdown file")
    if path.exists():
        try:
            replace_block(path.read_text(encoding="utf-8"), "", name)
        except (OSError, UnicodeDecodeError) as exc:
            raise DifforgeError(f"cannot read {path}: {exc}") from None
    folder = next(p for p in (path.parent, *path.parent.parents) if p.exists())
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise DifforgeError(f"cannot write {path}: {folder} is not a writable folder")


def update_perf_doc(path: Path, block: str, name: str = "bench") -> None:
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else "# Performance\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".partial")
        tmp.write_text(replace_block(text, block, name), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise DifforgeError(f"cannot write {path}: {exc.strerror}") from None
