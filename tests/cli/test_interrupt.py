"""An interrupted compile leaves no artifact and no staging folders behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _default_sigint() -> None:
    """The child gets SIGINT's default handler even when this test run ignores SIGINT (a
    background job, nohup): an ignored SIGINT is inherited, and difforge leaves it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(out: Path, *extra: str) -> subprocess.Popen[bytes]:
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
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_default_sigint,
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
    # Nothing cleans up during SIGKILL, but the target itself never exists half-written...
    assert not out.exists()
    left = list(tmp_path.iterdir())
    assert left and all(p.name.startswith(".artifact.") for p in left), left
    # ... and the next run for the same target removes what the killed one left.
    again = _start(out, "--max-batch", "0")  # refused after the target is checked
    _, err = again.communicate(timeout=120)
    assert again.returncode == 2, err
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())
