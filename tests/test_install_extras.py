"""The core install is the torch-free runtime; the compiler and the reports are extras.

`pip install difforge` on a Jetson or an edge box must run artifacts without torch, onnx or
diffusers installed, and a command that needs an extra must say which, in one line, before
doing any work. Packages are made uninstallable here by a meta-path hook in a fresh process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib

from difforge._deps import COMMAND_EXTRAS, OPTIONAL_PACKAGES

ROOT = Path(__file__).parents[1]
COMPILER = ("torch", "onnx", "onnxscript", "onnx_ir", "polygraphy", "diffusers", "transformers")
NOT_INSTALLED = (*COMPILER, "safetensors", "rich", "jsonschema", "matplotlib", "psutil", "sympy")

SCRIPT = """
import importlib.abc, sys
blocked = set(sys.argv[1].split(","))

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
sys.argv = ["difforge", *sys.argv[2:]]
from difforge.cli import main
main()
"""


def _without(packages: tuple[str, ...], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, ",".join(packages), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _names(requirements: list[str]) -> set[str]:
    return {r.split(">")[0].split("<")[0].split("=")[0].split("[")[0] for r in requirements}


def test_core_dependencies_are_the_runtime_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # tokenizers: FLUX's T5 tokenizer, read by the runtime (torch-free, aarch64 wheels)
    assert _names(project["dependencies"]) == {"numpy", "pillow", "click", "tokenizers"}
    extras = project["optional-dependencies"]
    # ONNX Runtime: the CPU or the GPU build, never pulled by the core over the other
    assert _names(extras["cpu"]) == {"onnxruntime"} and _names(extras["gpu"]) == {"onnxruntime-gpu"}
    assert "difforge[cpu]" in extras["dev"] and "difforge[cpu]" in extras["runtime"]
    assert {"torch", "onnx", "diffusers", "rich"} <= _names(extras["compile"])
    assert not {"torch", "diffusers", "transformers"} & _names(extras["profile"])
    # Every package the CLI would blame on a missing extra is outside the core.
    assert not {p.replace("_", "-") for p in OPTIONAL_PACKAGES} & _names(project["dependencies"])


def test_run_and_info_work_with_nothing_but_the_core(
    tiny_sd_artifact: Path, tmp_path: Path
) -> None:
    out = tmp_path / "x.png"
    done = _without(
        NOT_INSTALLED, "run", str(tiny_sd_artifact), "-q", "--steps", "1", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:4] == b"\x89PNG"
    done = _without(NOT_INSTALLED, "info", str(tiny_sd_artifact))
    assert done.returncode == 0 and "difforge artifact (built)" in done.stdout, done.stderr


@pytest.mark.parametrize(
    ("blocked", "command", "extra"),
    [
        (COMPILER, ("export", "--preset", "tiny-sd", "-o", "{tmp}/o"), "compile"),
        (COMPILER, ("eval", "{art}"), "compile"),
        (("sympy",), ("profile", "{art}", "-q", "--runs", "1", "--out", "{tmp}/r"), "profile"),
        (("ray",), ("serve", "{art}", "--port", "1"), "serve"),
    ],
)
def test_a_command_without_its_extra_names_it(
    tiny_sd_artifact: Path,
    tmp_path: Path,
    blocked: tuple[str, ...],
    command: tuple[str, ...],
    extra: str,
) -> None:
    args = [a.format(tmp=tmp_path, art=tiny_sd_artifact) for a in command]
    done = _without(blocked, *args)
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, lines
    head, _, rest = lines[0].partition(" needs '")
    assert head == f"difforge: error: `difforge {command[0]}`"
    assert rest.split("'")[0] in blocked
    assert lines[0].endswith(f"pip install 'difforge[{extra}]'")
    assert COMMAND_EXTRAS.get(command[0], "compile") == extra
    assert not list(tmp_path.iterdir())  # failed before any work


def test_without_onnx_runtime_a_run_says_which_to_install(tiny_sd_artifact: Path) -> None:
    done = _without(("onnxruntime",), "run", str(tiny_sd_artifact), "-q", "--steps", "1")
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, lines
    assert "needs ONNX Runtime" in lines[0] and "'difforge[cpu]'" in lines[0]
    assert "onnxruntime-gpu" in lines[0]


def test_the_onnx_runtime_distribution_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A platform's onnxruntime-gpu (JetPack's wheel) is found by its distribution, and two
    distributions of the one package are reported (they overwrite each other's files)."""
    from importlib import metadata

    from difforge._deps import onnxruntime_distributions
    from difforge.profile.doctor import doctor, render

    monkeypatch.setattr(metadata, "packages_distributions",
                        lambda: {"onnxruntime": ["onnxruntime-gpu"], "numpy": ["numpy"]})
    assert onnxruntime_distributions() == ["onnxruntime-gpu"]
    assert "(from onnxruntime-gpu)" in render(doctor())
    monkeypatch.setattr(metadata, "packages_distributions",
                        lambda: {"onnxruntime": ["onnxruntime", "onnxruntime-gpu"]})
    text = render(doctor())
    assert "both onnxruntime and onnxruntime-gpu are installed" in text


def _python310() -> str:
    """A Python 3.10 interpreter (Jetson's JetPack 6 Python): pyenv's, else one on PATH."""
    import glob
    import shutil

    pattern = Path.home() / ".pyenv" / "versions" / "3.10*" / "bin" / "python3.10"
    found = sorted(glob.glob(str(pattern)))
    path = found[-1] if found else shutil.which("python3.10")
    assert path, "no Python 3.10 interpreter here (pyenv's 3.10 or python3.10 on PATH)"
    return path


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_runtime_runs_on_python_310(tiny_sd_artifact: Path, tmp_path: Path) -> None:
    """The core install with the cpu extra on Python 3.10, as a Jetson has it (pip picks the
    versions 3.10 gets): `difforge run` makes the image this interpreter's runtime makes."""
    venv = tmp_path / "py310"
    subprocess.run([_python310(), "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    done = subprocess.run([python, "-m", "pip", "install", "-q", f"{ROOT}[cpu]"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    version = subprocess.run([python, "--version"], capture_output=True, text=True).stdout
    assert version.startswith("Python 3.10")
    ours, theirs = tmp_path / "311.png", tmp_path / "310.png"
    for exe, out in ((sys.executable, ours), (python, theirs)):
        done = subprocess.run(
            [exe, "-m", "difforge.cli", "run", str(tiny_sd_artifact), "--prompt", "a red boat",
             "--steps", "2", "--seed", "3", "--out", str(out), "-q"],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    from PIL import Image

    a = np.asarray(Image.open(ours), dtype=int)
    b = np.asarray(Image.open(theirs), dtype=int)
    assert a.shape == b.shape and int(np.abs(a - b).max()) <= 1  # other numpy/ORT builds
