"""Bad precision settings on the command line: one line, exit 2, nothing written, before any
export or calibration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _difforge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "difforge", *args], capture_output=True, text=True, timeout=300
    )


def _refused(done: subprocess.CompletedProcess[str], needle: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("difforge: error: "), done.stderr
    assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--precision", "int4"), "unknown precision 'int4'"),
        (("--precision", "vae=int8"), "unknown component 'vae'"),
        (("--precision", "bf16"), "the ort backend cannot build bf16 engines"),
        (("--precision", "int8-weights"), "(for int8-weights: --backend openvino)"),
        (("--precision", "int8", "--min-cosine", "2"), "--min-cosine must be in (0, 1]"),
        (
            ("--precision", "int8", "--backend", "openvino", "--calib-method", "entropy"),
            "quantizes with NNCF",
        ),
    ],
)
def test_compile_refuses_before_exporting(
    tmp_path: Path, args: tuple[str, ...], needle: str
) -> None:
    out = tmp_path / "out"
    _refused(_difforge("compile", "--preset", "tiny-sd", "-o", str(out), *args), needle)
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"\n  \n", "holds no prompts"),
        (b"\x89PNG\0\0", "is not a text file"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_bad_prompt_files(tmp_path: Path, content: bytes, needle: str) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(content)
    out = tmp_path / "out"
    args = ("--precision", "int8", "--calib-prompts", str(prompts))
    _refused(_difforge("compile", "--preset", "tiny-sd", "-o", str(out), *args), needle)
    assert not out.exists()


def test_calibrate_and_build_refuse_in_one_line(tiny_sd_export: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _refused(
        _difforge("calibrate", str(tiny_sd_export), "-o", str(out), "--samples", "1"),
        "calibration needs 2 to 4096 images, got 1",
    )
    _refused(
        _difforge("build", str(tiny_sd_export), "-o", str(out), "--precision", "vae_decoder=int4"),
        "unknown precision 'int4'",
    )
    assert not out.exists()
