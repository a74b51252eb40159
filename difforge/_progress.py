"""Progress reporting that the API emits and the CLI renders (with rich) or a caller ignores."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Protocol

Advance = Callable[[int], None]


class Reporter(Protocol):
    def task(self, description: str) -> contextlib.AbstractContextManager[None]: ...

    def note(self, message: str) -> None: ...

    def progress(
        self, description: str, total: int
    ) -> contextlib.AbstractContextManager[Advance]: ...


class SilentReporter:
    def task(self, description: str) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def note(self, message: str) -> None:
        return None

    def progress(self, description: str, total: int) -> contextlib.AbstractContextManager[Advance]:
        return contextlib.nullcontext(lambda n: None)


class RichReporter:
    """A spinner per long task, then a line with its duration (stderr, so --json stays clean)."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)

    @contextlib.contextmanager
    def task(self, description: str) -> Iterator[None]:
        start = time.perf_counter()
        with self.console.status(description + " ..."):
            yield
        self.console.print(f"[green]✓[/green] {description} ({time.perf_counter() - start:.1f} s)")

    def note(self, message: str) -> None:
        self.console.print(f"  {message}")

    @contextlib.contextmanager
    def progress(self, description: str, total: int) -> Iterator[Advance]:
        """A bar over ``total`` units; the caller advances it by n at a time."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        start = time.perf_counter()
        bar = Progress(
            "{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        with bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)
        self.console.print(f"[green]✓[/green] {description} ({time.perf_counter() - start:.1f} s)")
