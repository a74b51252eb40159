"""The kernels compile for a real GPU target (sm_90), not only run in the interpreter."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

import difforge.plugins.kernels.local_attention as la

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def compiled() -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run(
        [sys.executable, str(HERE / "kernel_compile.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.splitlines()


def test_kernels_compile_for_sm90(compiled: list[str]) -> None:
    lines = compiled
    kinds = [line.split()[0] for line in lines]
    images = len(la.TILE_CANDIDATES) + 1
    assert kinds == ["image"] * images + ["global", "merge", "toeplitz", "direct"], lines
    # Spilling to the stack would make the GPU timings meaningless.
    assert all("STACK:0 " in line for line in lines if not line.startswith("direct")), lines
    # Deeper pipelines keep copies in flight in every loop: the block lists' three loops
    # (full, partial, edge) and the text and pooled spans (whole blocks, then the tail).
    for line in lines[: images - 1]:
        waits = line.rsplit("WAITS:", 1)[1].split()[0].split(",")
        if "num_stages=3" in line:
            assert all(int(w) >= 1 for w in waits), line
        if "schedule='list'" in line:
            assert len(waits) == 7, line


def _loops(line: str) -> list[tuple[int, int]]:
    """(instructions, per-score selects) of each MMA loop on a kernel_compile.py line."""
    return [tuple(map(int, loop.split("/"))) for loop in line.rsplit("LOOPS:", 1)[1].split(",")]


def test_block_lists_cut_the_per_block_issue_cost(compiled: list[str]) -> None:
    """Static SASS counts (sm_90): what the list schedule saves per key block, per thread.

    Fully visible blocks carry no per-score select at all; partial blocks one (the window
    test) where the nested schedule spends two (key bounds and window); and the partial loop
    is shorter than the nested schedule's block loop at the same tile shape.
    """
    images = {line.split("AttentionTiles")[1].split(")")[0]: line for line in compiled
              if line.startswith("image fp16 disc")}  # fmt: skip
    nested = _loops(images["(qy=8, qx=8, ky=8, kx=8, block_g=64, num_warps=4, num_stages=2, "
                           "schedule='nested'"])  # fmt: skip
    listed = _loops(images["(qy=8, qx=8, ky=8, kx=8, block_g=64, num_warps=4, num_stages=2, "
                           "schedule='list'"])  # fmt: skip
    scores_per_thread = 64 * 64 // 128
    (full, full_sel), (partial, partial_sel) = listed[0], listed[1]
    assert full_sel == 0 and partial_sel == scores_per_thread
    assert nested[0][1] == 2 * scores_per_thread
    assert full < partial < nested[0][0]
