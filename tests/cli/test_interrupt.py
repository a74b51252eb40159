"""An interrupted compile leaves no artifact and no staging folders behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _start(out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "difforge.cli",
            "compile",
            "-q",
            "--preset",
            "tiny-sd",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_for_staging(folder: Path, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # The export's own staging folder appears once the first graph is being written.
        if list(folder.glob(".*/.export.partial-*")) or list(folder.glob(".*.partial-*")):
            return
        assert proc.poll() is None, "compile ended before it could be interrupted"
        time.sleep(0.2)
    raise AssertionError("no staging folder appeared")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_killed_compile_leaves_nothing(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "artifact"
    proc = _start(out)
    _wait_for_staging(tmp_path, proc)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())


def test_sigkill_never_leaves_a_half_artifact(tmp_path: Path) -> None:
    out = tmp_path / "artifact"
    proc = _start(out)
    _wait_for_staging(tmp_path, proc)
    proc.kill()
    proc.wait(timeout=60)
    # Nothing can clean up after SIGKILL, but the target itself never exists half-written.
    assert not out.exists()
    assert all(p.name.startswith(".") for p in tmp_path.iterdir())
