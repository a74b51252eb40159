"""Every registered patch, preset, graph pass, engine and runner has its test case."""

from __future__ import annotations

from pathlib import Path

from difforge.engines import available_backends
from difforge.passes import available_passes
from difforge.patches import available_patches, parse_patch_arg
from difforge.runtime.runners import available_runners
from difforge.sources.presets import PRESETS
from tests.registry_cases import PATCH_CASES, PRESET_CASES

TESTS = Path(__file__).resolve().parent


def _module(name: str) -> str:
    return name.replace("-", "_")


def test_every_patch_has_an_end_to_end_case() -> None:
    assert {parse_patch_arg(case[1]).name for case in PATCH_CASES} == set(available_patches())


def test_every_preset_has_a_case() -> None:
    assert set(PRESET_CASES) == set(PRESETS)


def test_every_pass_has_a_test_module() -> None:
    missing = [n for n in available_passes() if not (TESTS / "passes" / f"test_{n}.py").is_file()]
    assert not missing, f"passes without tests/passes/test_<name>.py: {missing}"


def test_every_engine_has_a_test_module() -> None:
    missing = [
        b
        for b in available_backends()
        if not (TESTS / "engines" / f"test_{_module(b)}.py").is_file()
    ]
    assert not missing, f"backends without tests/engines/test_<backend>.py: {missing}"


def test_every_runner_has_a_test_module() -> None:
    missing = [
        b
        for b in available_runners()
        if not (TESTS / "runtime" / f"test_runner_{_module(b)}.py").is_file()
    ]
    assert not missing, f"runners without tests/runtime/test_runner_<backend>.py: {missing}"
