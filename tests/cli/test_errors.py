"""Every user error: one line naming it, exit code 2, no traceback, nothing half-written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXIT = 2


def difforge(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "difforge.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_user_error(done: subprocess.CompletedProcess[str], needle: str) -> None:
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode == EXIT, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    assert len(lines) == 1, lines
    assert lines[0].startswith("difforge: error: ")
    assert needle in lines[0], lines[0]


@pytest.fixture
def artifact_copy(tiny_sd_artifact: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(tiny_sd_artifact, dst)
    return dst


def test_missing_model_path(tmp_path: Path) -> None:
    done = difforge("export", "-q", "--model", str(tmp_path / "nope"), "-o", str(tmp_path / "o"))
    assert_user_error(done, "model path does not exist")
    assert not (tmp_path / "o").exists()


def test_not_a_diffusers_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = difforge("export", "-q", "--model", str(tmp_path / "empty"), "-o", str(tmp_path / "o"))
    assert_user_error(done, "is not a diffusers folder")


def test_scheduler_the_runtime_cannot_run(tmp_path: Path) -> None:
    model = tmp_path / "digits-unet"
    shutil.copytree(Path(__file__).parents[2] / "models" / "digits-unet", model)
    config = {"_class_name": "DDIMScheduler", "num_train_timesteps": 1000}
    config["prediction_type"] = "flow"
    (model / "scheduler" / "scheduler_config.json").write_text(json.dumps(config))
    done = difforge("export", "-q", "--model", str(model), "-o", str(tmp_path / "o"))
    assert_user_error(done, "its scheduler cannot be run: scheduler 'ddim' does not support")
    assert not (tmp_path / "o").exists()


def test_unknown_preset(tmp_path: Path) -> None:
    done = difforge("compile", "-q", "--preset", "huge-sd", "-o", str(tmp_path / "o"))
    assert_user_error(done, "unknown preset 'huge-sd'")


def test_preset_and_model_both(tmp_path: Path) -> None:
    done = difforge(
        "export", "-q", "--preset", "tiny-sd", "--model", str(tmp_path), "-o", str(tmp_path / "o")
    )
    assert_user_error(done, "exactly one of --preset or --model")


def test_bad_resolution_option(tmp_path: Path) -> None:
    done = difforge(
        "export", "-q", "--preset", "tiny-sd", "--resolution", "big", "-o", str(tmp_path / "o")
    )
    assert_user_error(done, "--resolution takes")
    done = difforge(
        "export", "-q", "--preset", "tiny-sd", "--resolution", "200", "-o", str(tmp_path / "o")
    )
    assert_user_error(done, "not a multiple of 16")


@pytest.mark.parametrize(
    ("opset", "needle"),
    [
        ("40", "--opset 40 does not exist"),
        # torch writes opset 18 and cannot convert this text encoder down (LayerNormalization).
        ("9", "could not write the text_encoder at opset 9 (it wrote opset 18)"),
    ],
)
def test_opset_the_exporter_cannot_write(tmp_path: Path, opset: str, needle: str) -> None:
    out = tmp_path / "o"
    done = difforge("export", "-q", "--preset", "tiny-sd", "--opset", opset, "-o", str(out))
    assert_user_error(done, needle)
    assert not out.exists()


def test_existing_output_needs_force(tiny_sd_export: Path, tiny_sd_artifact: Path) -> None:
    before = (tiny_sd_artifact / "manifest.json").read_bytes()
    done = difforge("build", "-q", str(tiny_sd_export), "-o", str(tiny_sd_artifact))
    assert_user_error(done, "already exists (use --force")
    assert (tiny_sd_artifact / "manifest.json").read_bytes() == before


def test_force_replaces_only_artifacts(tiny_sd_export: Path, tmp_path: Path) -> None:
    mine = tmp_path / "my-project"
    mine.mkdir()
    (mine / "notes.txt").write_text("not an artifact")
    done = difforge("build", "-q", str(tiny_sd_export), "-o", str(mine), "--force")
    assert_user_error(done, "not a difforge artifact; --force replaces only artifacts")
    assert (mine / "notes.txt").read_text() == "not an artifact"
    # An artifact, and an empty folder, are replaced. (--no-optimize: what --force replaces
    # does not depend on the graph passes, and copying the graphs spares three builds' passes.)
    (tmp_path / "empty").mkdir()
    for target in (tmp_path / "empty", tmp_path / "art", tmp_path / "art"):
        args = ("-o", str(target), "--force", "--no-optimize")
        done = difforge("build", "-q", str(tiny_sd_export), *args)
        assert done.returncode == 0, done.stderr
        assert (target / "manifest.json").is_file()


def test_build_from_built_artifact(tiny_sd_artifact: Path, tmp_path: Path) -> None:
    done = difforge("build", "-q", str(tiny_sd_artifact), "-o", str(tmp_path / "o"))
    assert_user_error(done, "already a built artifact")


def test_unwritable_output(tiny_sd_export: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    done = difforge("build", "-q", str(tiny_sd_export), "-o", str(blocker / "sub" / "o"))
    assert_user_error(done, "cannot write")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--resolution", "1024"), "outside this artifact's range [128, 512]"),
        (("--resolution", "200"), "not a multiple of 16"),
        (("--steps", "0"), "at least 1"),
        (("--scheduler", "flow-euler"), "does not fit this model"),
        (("--scheduler", "plms"), "unknown scheduler 'plms'"),
        (("--class-label", "3"), "takes a prompt, not a class label"),
        (("--seed", "-1"), "--seed must be 0 or more, got -1"),
        (("--guidance", "-2"), "--guidance must be 0 or more, got -2"),
        (
            ("--negative-prompt", "blurry", "--guidance", "1"),
            "a negative prompt would have no effect",
        ),
        (("--classes", "0-3"), "--classes needs a class-to-image artifact"),
        (("--resolution", "256", "--height", "128"), "give it or them, not both"),
        (("--steps", "1000000000"), "--steps 1000000000 exceeds the 1000 training timesteps"),
        (("--guidance", "nan"), "--guidance must be a finite number, got nan"),
        (("--guidance", "inf"), "--guidance must be a finite number, got inf"),
        (("--threads", "100000"), "--threads 100000: this machine has"),
        (("--threads", "-1"), "--threads must be 0 (all cores) or more"),
        (("--steps", "abc"), "Invalid value for '--steps': 'abc' is not a valid integer"),
        (("--no-such-option",), "No such option '--no-such-option'"),
    ],
)
def test_bad_run_request(
    tiny_sd_artifact: Path, tmp_path: Path, args: tuple[str, ...], needle: str
) -> None:
    out = tmp_path / "x.png"
    done = difforge("run", str(tiny_sd_artifact), "-q", *args, "--out", str(out))
    assert_user_error(done, needle)
    assert not out.exists()


def test_run_output_folder_missing(tiny_sd_artifact: Path, tmp_path: Path) -> None:
    done = difforge(
        "run", str(tiny_sd_artifact), "-q", "--steps", "1", "--out", str(tmp_path / "no" / "x.png")
    )
    assert_user_error(done, "does not exist")


def test_run_output_naming_a_folder(tiny_sd_artifact: Path, tmp_path: Path) -> None:
    done = difforge("run", str(tiny_sd_artifact), "-q", "--steps", "1", "--out", str(tmp_path))
    assert_user_error(done, "it is a folder (name an image file)")


def test_prompt_that_is_not_utf8(tiny_sd_artifact: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.png"
    done = subprocess.run(
        [sys.executable.encode(), b"-m", b"difforge.cli", b"run", str(tiny_sd_artifact).encode(),
         b"-q", b"--steps", b"1", b"--prompt", b"a \xff cat", b"--out", str(out).encode()],
        capture_output=True, text=True, timeout=300,
    )
    assert_user_error(done, "the prompt is not valid Unicode text")
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--preset", "tiny-sd", "--resolution", "100000"), "--resolution 100000 is above"),
        (("--preset", "tiny-sd", "--max-batch", "1000000000"), "--max-batch must be in [1, 64]"),
        (("--preset", "tiny-sd", "--threads", "-1"), "--threads must be 0 (all cores) or more"),
        (("--preset", "tiny-sd", "--custom-ops", "maybe"), "Invalid value for '--custom-ops'"),
    ],
)
def test_compile_settings_refused_before_any_work(
    tmp_path: Path, args: tuple[str, ...], needle: str
) -> None:
    done = difforge("compile", "-q", *args, "-o", str(tmp_path / "o"), timeout=60)
    assert_user_error(done, needle)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--min-psnr", "nan"), "--min-psnr must be a finite number of dB"),
        (("--quality-samples", "-5"), "--quality-samples must be in [0, 100000]"),
        (("--images", "0"), "--images must be in [1, 1000]"),
    ],
)
def test_bad_eval_settings(tiny_dit_artifact: Path, args: tuple[str, ...], needle: str) -> None:
    assert_user_error(difforge("eval", str(tiny_dit_artifact), "-q", *args), needle)


def test_run_output_suffix_unknown(tiny_sd_artifact: Path, tmp_path: Path) -> None:
    done = difforge("run", str(tiny_sd_artifact), "-q", "--out", str(tmp_path / "x.txt"))
    assert_user_error(done, "unknown image suffix '.txt'")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--prompt", "a cat"), "class-to-image artifact (1000 classes) takes a class label"),
        (("--class-label", "1000"), "class label 1000 is outside [0, 999]"),
        (("--classes", "998-1001"), "class label 1000 is outside [0, 999]"),
        (("--classes", "1,2", "--scheduler", "flow-euler"), "does not fit this model"),
        (("--classes", "1,2", "--resolution", "4096"), "height 4096 is outside this artifact"),
        (("--classes", "1,2", "--prompt", "a cat"), "--classes takes no --class-label, --prompt"),
        (("--classes", "0-99999999"), "--classes names 100000000 images; one grid holds at most"),
        (("--classes", "3-1"), "--classes takes class numbers and ranges"),
    ],
)
def test_bad_class_request(
    tiny_dit_artifact: Path, tmp_path: Path, args: tuple[str, ...], needle: str
) -> None:
    out = tmp_path / "x.png"
    done = difforge("run", str(tiny_dit_artifact), "-q", *args, "--out", str(out))
    assert_user_error(done, needle)
    assert not out.exists()


def test_eval_prompt_on_class_artifact(tiny_dit_artifact: Path) -> None:
    done = difforge("eval", str(tiny_dit_artifact), "-q", "--prompt", "a cat")
    assert_user_error(done, "compared class by class; it takes no --prompt")


def test_run_missing_artifact(tmp_path: Path) -> None:
    assert_user_error(difforge("run", str(tmp_path / "none")), "artifact not found")
    assert_user_error(difforge("info", str(tmp_path)), "is not a difforge artifact")


def test_truncated_onnx_is_refused(artifact_copy: Path) -> None:
    model = artifact_copy / "denoiser" / "model.onnx"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    assert_user_error(difforge("run", str(artifact_copy), "-q"), "artifact file changed")


def test_corrupt_onnx_with_rehashed_manifest(artifact_copy: Path) -> None:
    from difforge.artifact.manifest import read_manifest, write_manifest

    model = artifact_copy / "vae_decoder" / "model.onnx"
    model.write_bytes(b"not an onnx file at all")
    manifest = read_manifest(artifact_copy, verify=False)
    write_manifest(artifact_copy, manifest)  # hashes now match the corrupt file
    assert_user_error(difforge("run", str(artifact_copy), "-q"), "cannot load model.onnx")


def test_tampered_file_is_refused(artifact_copy: Path) -> None:
    vocab = artifact_copy / "tokenizer" / "vocab.json"
    data = json.loads(vocab.read_text())
    data["cat</w>"] = 1
    vocab.write_text(json.dumps(data))
    assert_user_error(difforge("run", str(artifact_copy), "-q"), "tokenizer/vocab.json")


def test_tampered_manifest_is_refused(artifact_copy: Path) -> None:
    path = artifact_copy / "manifest.json"
    data = json.loads(path.read_text())
    data["files"]["denoiser/model.onnx"]["sha256"] = "0" * 64
    path.write_text(json.dumps(data))
    assert_user_error(difforge("info", str(artifact_copy)), "sha256 differs")
    path.write_text("{ not json")
    assert_user_error(difforge("info", str(artifact_copy)), "cannot read")
    data["format_version"] = 99
    path.write_text(json.dumps(data))
    assert_user_error(difforge("info", str(artifact_copy)), "newer than this difforge")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    done = difforge("--debug", "export", "-q", "--preset", "nope", "-o", str(tmp_path / "o"))
    assert done.returncode != 0
    assert "Traceback" in done.stderr and "DifforgeError" in done.stderr


def test_help_on_every_command() -> None:
    for cmd in ("export", "build", "compile", "run", "info"):
        done = difforge(cmd, "--help")
        assert done.returncode == 0 and "Usage:" in done.stdout, cmd
