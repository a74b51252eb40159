"""Calibration prompts: a small default set that ships, or the user's file (one per line)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from difforge.errors import DifforgeError

#: bound on a prompt file (a calibration set is tens of prompts, not a corpus)
MAX_PROMPT_FILE_BYTES = 1 << 20


def default_prompts() -> list[str]:
    text = resources.files("difforge.calib").joinpath("prompts.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_prompts(path: Path) -> list[str]:
    """The non-empty lines of ``path``; refuses a missing, binary, non-UTF-8 or empty file."""
    if not path.is_file():
        raise DifforgeError(f"--calib-prompts: {path} is not a file")
    if path.stat().st_size > MAX_PROMPT_FILE_BYTES:
        raise DifforgeError(f"--calib-prompts: {path} is larger than 1 MiB")
    data = path.read_bytes()
    if b"\0" in data:
        raise DifforgeError(f"--calib-prompts: {path} is not a text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DifforgeError(f"--calib-prompts: {path} is not UTF-8 text") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise DifforgeError(f"--calib-prompts: {path} holds no prompts (one per line)")
    return prompts
