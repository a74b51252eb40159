"""The kernels compile for a real GPU target (sm_90), not only run in the interpreter."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

import difforge.plugins.kernels.local_attention as la

HERE = Path(__file__).resolve().parent


def test_kernels_compile_for_sm90() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run(
        [sys.executable, str(HERE / "kernel_compile.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    kinds = [line.split()[0] for line in lines]
    images = len(la.TILE_CANDIDATES) + 1
    assert kinds == ["image"] * images + ["global", "merge", "toeplitz", "direct"], lines
    # Spilling to the stack would make the GPU timings meaningless.
    assert all("STACK:0 " in line for line in lines if not line.startswith("direct")), lines
    # Deeper pipelines keep copies in flight in every loop: the block lists' two loops
    # (full, partial) and the text and pooled spans.
    for line in lines[: images - 1]:
        waits = line.rsplit("WAITS:", 1)[1].split(",")
        if "num_stages=3" in line:
            assert all(int(w) >= 1 for w in waits), line
        if "schedule='list'" in line:
            assert len(waits) == 4, line
