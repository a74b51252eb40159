"""Hostile artifacts: seeded random mutations of a valid manifest and of an ONNX graph either
run or are refused with a DifforgeError, and nothing is written outside the artifact's
sandbox."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

DRIVER = Path(__file__).with_name("fuzz_driver.py")
MANIFEST_CASES, GRAPH_CASES = 300, 40


def test_mutated_artifacts_run_or_are_refused(
    tiny_sd_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox = (tmp_path / "sandbox").resolve()
    sandbox.mkdir()
    done = subprocess.run(
        [sys.executable, str(DRIVER), str(tiny_sd_artifact), str(sandbox), "2026",
         str(MANIFEST_CASES), str(GRAPH_CASES)],
        capture_output=True, text=True, timeout=900,
    )
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "{}"
    assert done.returncode == 0, (last, done.stderr[-3000:])
    report = json.loads(last)
    outcomes = report["outcomes"]
    assert sum(outcomes.values()) == MANIFEST_CASES + GRAPH_CASES
    assert report["outside_writes"] == []
    assert report["writes"] > MANIFEST_CASES  # the hook sees writes (the driver's own, inside)
    assert outcomes.get("ran", 0) > 0 and outcomes.get("refused", 0) > 0  # not vacuous
    with capsys.disabled():
        print(f"\nfuzz: {MANIFEST_CASES + GRAPH_CASES} cases, outcomes {outcomes}")
