"""Shared fixtures: small artifacts compiled once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Triton kernels run on CPU through triton's interpreter, which must be chosen before anything
# (torch.compile in the profile tests, say) imports triton.
os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def tiny_sd_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from difforge import ExportConfig, export

    out = tmp_path_factory.mktemp("tiny-sd") / "export"
    return export(ExportConfig(output=out, preset="tiny-sd"))


@pytest.fixture(scope="session")
def tiny_sd_artifact(tiny_sd_export: Path) -> Path:
    from difforge import BuildConfig, build

    return build(BuildConfig(source=tiny_sd_export, output=tiny_sd_export.parent / "built"))


@pytest.fixture(scope="session")
def tiny_dit_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from difforge import CompileConfig, ExportConfig, compile

    out = tmp_path_factory.mktemp("tiny-dit") / "built"
    return compile(CompileConfig(export=ExportConfig(output=out, preset="tiny-dit")))


@pytest.fixture(scope="session")
def tiny_sd_openvino(tiny_sd_export: Path) -> Path:
    from difforge import BuildConfig, build

    out = tiny_sd_export.parent / "openvino"
    return build(BuildConfig(source=tiny_sd_export, output=out, backend="openvino"))


#: tiny-sd's calibration in tests: 4 images (1 held out for the gates), 8 steps
CALIB_SAMPLES, CALIB_STEPS = 4, 8


@pytest.fixture(scope="session")
def tiny_sd_calibrated(tiny_sd_export: Path) -> Path:
    from difforge import CalibrateConfig, calibrate

    return calibrate(
        CalibrateConfig(
            source=tiny_sd_export,
            output=tiny_sd_export.parent / "calibrated",
            samples=CALIB_SAMPLES,
            steps=CALIB_STEPS,
        )
    )
