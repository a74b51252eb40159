"""The runtime never imports torch, diffusers or transformers, even through a full run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "diffusers", "transformers", "onnx", "onnxscript")


def _python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    return done.stdout.strip().splitlines()[-1]


def test_import_runtime_is_light() -> None:
    out = _python(
        f"import sys, difforge.runtime, difforge; print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    assert out == "[]"


@pytest.mark.slow
def test_full_run_stays_torch_free(tiny_sd_artifact: Path, tmp_path: Path) -> None:
    png = tmp_path / "x.png"
    code = f"""
import sys, json
from difforge.cli import main
sys.argv = ["difforge", "run", {str(tiny_sd_artifact)!r}, "--prompt", "a cat", "--steps", "3",
            "--out", {str(png)!r}, "-q"]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
"""
    assert json.loads(_python(code)) == []
    assert png.stat().st_size > 0


def test_class_grid_run_stays_torch_free(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """`run --classes` on a pixel-space digits artifact (compiled in this process, here or by
    an earlier test, so torch is allowed in this process, not in the child)."""
    from tests.digits_artifacts import shared_digits_artifact

    art = shared_digits_artifact(tmp_path_factory, "digits-unet-4step")
    png = tmp_path / "grid.png"
    code = f"""
import sys, json
from difforge.cli import main
sys.argv = ["difforge", "run", {str(art)!r}, "--classes", "0-4", "--out", {str(png)!r}, "-q"]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
"""
    assert json.loads(_python(code)) == []
    assert png.stat().st_size > 0
