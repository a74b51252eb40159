"""scripts/gpu_engines.py on a machine without a GPU: it says what it skipped and why, and
builds nothing; with a CUDA provider faked present, its ONNX Runtime rows run the CPU and the
"GPU" sessions from one artifact and compare their images."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "scripts"))
import gpu_engines


def test_without_a_gpu_everything_is_skipped_with_its_reason(tmp_path: Path) -> None:
    report = gpu_engines.section(tmp_path / "work")
    assert report["rows"] == []
    assert "no CUDAExecutionProvider" in report["skipped"]["ort-cuda"]
    assert "TensorRT" in report["skipped"]["tensorrt"]
    assert not any((tmp_path / "work").iterdir())  # nothing was built


def test_cuda_rows_compare_and_time_the_two_providers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(gpu_engines, "CASES", [("tiny-sd", None)])
    monkeypatch.setattr(gpu_engines, "_compile", lambda work, p, patch, prec: work / f"{p}-{prec}")

    def images(artifact: Path, providers: list[str]) -> tuple[np.ndarray, float]:
        calls.append((artifact.name, providers))
        image = np.full((8, 8, 3), 100, np.uint8)
        if providers[0] == "CUDAExecutionProvider" and artifact.name.endswith("fp16"):
            image[0, 0] = 140  # fp16 on the GPU: off by more than 2/255 somewhere
        return image, 0.5 if providers[0] == "CUDAExecutionProvider" else 2.0

    monkeypatch.setattr(gpu_engines, "_images", images)
    rows: list[dict[str, Any]] = gpu_engines.ort_cuda_rows(tmp_path)
    assert [(r["precision"], r["max_diff"], r["ok"], r["speedup"]) for r in rows] == [
        ("fp32", 0, True, 4.0), ("fp16", 40, True, 4.0)  # fp16 judged by PSNR (> 30 dB)
    ]
    assert calls[1][1] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
