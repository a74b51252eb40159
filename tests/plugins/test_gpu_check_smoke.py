"""scripts/gpu_check.py runs end to end (on CPU, toy sizes, TRITON_INTERPRET=1)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


def test_gpu_check_cpu_smoke(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--cpu-smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert {r["op"] for r in rows} == {"wiring", "local_attention_2d", "depthwise_conv2d"}
    assert all(r["ok"] for r in rows), rows
    # On CPU the ops take their PyTorch fallbacks (on CUDA the check demands the kernels).
    wiring = [r for r in rows if r["op"] == "wiring"]
    assert [r["path"] for r in wiring] == ["fallback", "fallback"], wiring
    attention = [r for r in rows if r["op"] == "local_attention_2d"]
    assert all("sdpa_ms" in r and r["flash_equiv_ms"] > 0 for r in attention)
    # Every candidate timed; the list schedule reports its computed / visible pairs.
    assert all(len(r["candidates"]) == 2 for r in attention), attention
    assert all(r["waste"] is None or r["waste"] >= 1 for r in attention)
    assert "dense flash SDPA, same pairs" in run.stdout
    assert all("cudnn_ms" in r for r in rows if r["op"] == "depthwise_conv2d")
    assert report["goals"] and "GOAL" in run.stdout


def test_plan_headline_first_and_no_flex() -> None:
    import argparse
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    full = module.plan(argparse.Namespace(cpu_smoke=False, quick=False, no_flex=False))
    kinds = [kind for kind, _ in full]
    assert kinds[:4] == ["attention"] * 4  # the goals' cases come first
    assert full[0][1]["size"] == 128 and full[0][1]["radius"] == 16
    assert any(kw.get("flex") for _, kw in full)
    lean = module.plan(argparse.Namespace(cpu_smoke=False, quick=False, no_flex=True))
    assert len(lean) == len(full) and not any(kw.get("flex") for _, kw in lean)
