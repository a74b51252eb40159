"""``difforge doctor`` and ``difforge cache``: one screen of what this machine can build and
run (absent libraries reported as facts), and the engine cache listed and collected."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from difforge.engines.tensorrt import trt_api
from difforge.engines.tensorrt.cache import EngineCache, EngineKey
from difforge.profile.doctor import doctor, render
from tests.cli.test_errors import assert_user_error, difforge


def test_doctor_on_this_machine() -> None:
    done = difforge("doctor")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "CPUExecutionProvider" in out and "flags" in out
    assert "TensorRT: not installed" in out  # it cannot be installed here
    assert "difforge::LocalAttention2D: no TensorRT plugin yet" in out
    assert "tensorrt (runner here)" in out and "ort (runner here)" in out
    report = json.loads(difforge("doctor", "--json").stdout)
    assert report["tensorrt"] == {"installed": False} and report["gpu"]["found"] is False
    assert "CPUExecutionProvider" in report["onnxruntime"]["providers"]


class _Flags:
    FP16 = "FP16"


class _Trt:
    __version__ = "10.3.0"
    BuilderFlag = _Flags


def test_doctor_reports_tensorrt_and_the_gpu_it_finds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(trt_api, "load", lambda: (_Trt(), object()))
    monkeypatch.setattr(trt_api, "device", lambda: trt_api.Device("Orin", "8.7"))
    monkeypatch.setenv("DIFFORGE_ENGINE_CACHE", str(tmp_path))
    EngineCache().put(EngineKey("a" * 64, "fp16", "[]", "10.3.0", "8.7"), b"x" * 2_000_000)
    text = render(doctor())
    assert "TensorRT: 10.3.0 (weak and strong typed builds)" in text
    assert "GPU: Orin, compute capability 8.7" in text
    assert f"engine cache: {tmp_path} (1 engines, 2.0 MB)" in text


def test_cache_ls_and_gc(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    cache.put(EngineKey("a" * 64, "fp16", "[]", "10.3.0", "8.7"), b"engine")
    env_run = [sys.executable, "-m", "difforge.cli"]
    env = {"DIFFORGE_ENGINE_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}
    listed = subprocess.run([*env_run, "cache", "ls"], capture_output=True, text=True, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "1 engines" in listed.stdout and "TensorRT 10.3.0  sm 8.7  fp16" in listed.stdout
    kept = subprocess.run([*env_run, "cache", "gc", "--older-than", "1"], capture_output=True,
                          text=True, env=env)
    assert "removed 0 engines" in kept.stdout and cache.entries()
    gone = subprocess.run([*env_run, "cache", "gc"], capture_output=True, text=True, env=env)
    assert "removed 1 engines" in gone.stdout and not cache.entries()
    assert_user_error(difforge("cache", "gc", "--older-than", "-1"), "--older-than must be")
