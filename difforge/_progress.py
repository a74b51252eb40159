"""Progress reporting that the API emits and the CLI renders (with rich) or a caller ignores."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Protocol


class Reporter(Protocol):
    def task(self, description: str) -> contextlib.AbstractContextManager[None]: ...

    def note(self, message: str) -> None: ...


class SilentReporter:
    def task(self, description: str) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def note(self, message: str) -> None:
        return None


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
