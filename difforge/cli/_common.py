"""What every command shares: the one-line error, the progress reporters, number lists."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click

from difforge.errors import DifforgeError

EXIT_USER_ERROR = 2


def fail(message: str) -> NoReturn:
    click.echo(f"difforge: error: {message}", err=True)
    sys.exit(EXIT_USER_ERROR)


def reporter(quiet: bool) -> Any:
    """Task spinners and notes on stderr (rich), or nothing."""
    from difforge._progress import RichReporter, SilentReporter

    return SilentReporter() if quiet else RichReporter()


def parse_ints(text: str | None, option: str) -> list[int]:
    """'256,512' -> [256, 512]; positive integers only."""
    if not text:
        return []
    try:
        values = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise DifforgeError(f"{option} takes comma-separated integers, got {text!r}") from None
    if any(v <= 0 for v in values):
        raise DifforgeError(f"{option} values must be positive, got {text!r}")
    return values


@contextmanager
def rich_progress(enabled: bool) -> Iterator[object]:
    """A rich progress bar on stderr (so --json stays clean); a no-op callback when disabled."""
    if not enabled:
        yield lambda *_: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bars: dict[str, object] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bar:

        def update(what: str, done: int, total: int) -> None:
            if what not in bars:
                bars[what] = bar.add_task(what, total=total)
            bar.update(bars[what], completed=done, total=total)  # type: ignore[arg-type]

        yield update
