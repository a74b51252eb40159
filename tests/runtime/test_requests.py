"""Generation requests: conditioning checked against the artifact, batches, image formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from difforge.errors import DifforgeError
from difforge.runtime import GenerateRequest, load
from difforge.runtime.image import image_format, save_image


def test_class_artifact_defaults_to_class_zero(tiny_dit_artifact: Path) -> None:
    pipe = load(tiny_dit_artifact)
    default = pipe(GenerateRequest(steps=1, guidance_scale=1.0, seed=3)).images
    zero = pipe(GenerateRequest(class_label=0, steps=1, guidance_scale=1.0, seed=3)).images
    five = pipe(GenerateRequest(class_label=5, steps=1, guidance_scale=1.0, seed=3)).images
    np.testing.assert_array_equal(default, zero)
    assert not np.array_equal(zero, five)


def test_one_label_serves_every_initial_latent(tiny_dit_artifact: Path) -> None:
    pipe = load(tiny_dit_artifact)
    shape = (2, 4, 16, 16)
    latents = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    one = pipe(GenerateRequest(class_label=7, steps=1, guidance_scale=1.0, latents=latents))
    each = pipe(GenerateRequest(class_label=[7, 7], steps=1, guidance_scale=1.0, latents=latents))
    assert one.images.shape[0] == 2
    np.testing.assert_array_equal(one.images, each.images)


@pytest.mark.parametrize(
    ("request_kw", "needle"),
    [
        ({"class_label": []}, "no class labels"),
        ({"class_label": [1, 2]}, "2 class labels for 3 initial latents"),
        ({"class_label": [1, 2, 3]}, "3 images in one call, but this artifact takes at most 2"),
        ({"negative_prompt": "blurry"}, "takes a class label, not a prompt"),
        ({"class_label": -1}, "class label -1 is outside"),
    ],
)
def test_class_request_refused(
    tiny_dit_artifact: Path, request_kw: dict[str, object], needle: str
) -> None:
    pipe = load(tiny_dit_artifact)
    latents = np.zeros((3, 4, 16, 16), dtype=np.float32)
    with pytest.raises(DifforgeError, match=needle):
        pipe.resolve(GenerateRequest(latents=latents, **request_kw))  # type: ignore[arg-type]


def test_text_request_refused(tiny_sd_artifact: Path) -> None:
    pipe = load(tiny_sd_artifact)
    most = pipe.images_per_call(7.5)
    with pytest.raises(DifforgeError, match=f"at most {most} at guidance 7.5"):
        pipe.resolve(GenerateRequest(prompt=["a cat"] * (most + 1), guidance_scale=7.5))
    with pytest.raises(DifforgeError, match="no prompts"):
        pipe.resolve(GenerateRequest(prompt=[]))
    with pytest.raises(DifforgeError, match="takes a prompt, not a class label"):
        pipe.resolve(GenerateRequest(prompt="a cat", class_label=0))
    with pytest.raises(DifforgeError, match="use at most 999 steps"):  # before any work
        pipe.resolve(GenerateRequest(prompt="a cat", steps=1000))


def test_negative_prompt_needs_guidance(tiny_sd_artifact: Path) -> None:
    pipe = load(tiny_sd_artifact)
    with pytest.raises(DifforgeError, match="no effect: guidance 1 runs no classifier-free"):
        pipe.resolve(GenerateRequest(prompt="a cat", negative_prompt="blurry", guidance_scale=1))
    guided = pipe.resolve(
        GenerateRequest(prompt="a cat", negative_prompt="blurry", guidance_scale=3)
    )
    assert guided.negative_prompt == "blurry"


@pytest.mark.parametrize("batch", [1, 2])
def test_example_request_fits_either_kind(
    tiny_sd_artifact: Path, tiny_dit_artifact: Path, batch: int
) -> None:
    for artifact in (tiny_sd_artifact, tiny_dit_artifact):
        pipe = load(artifact)
        request = pipe.example_request(batch, steps=1, guidance_scale=1.0)
        result = pipe(request)
        assert result.images.shape[0] == batch
        assert result.request["batch"] == batch


@pytest.mark.parametrize(("suffix", "magic"), [(".png", b"\x89PNG"), (".jpg", b"\xff\xd8\xff")])
def test_save_image_format_from_suffix(tmp_path: Path, suffix: str, magic: bytes) -> None:
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    path = save_image(image, tmp_path / f"x{suffix}")
    assert path.read_bytes().startswith(magic)
    assert [p.name for p in tmp_path.iterdir()] == [f"x{suffix}"]


@pytest.mark.parametrize(
    ("name", "needle"),
    [("x", r"unknown image suffix '\(none\)'"), ("x.onnx", "unknown image suffix '.onnx'"),
     ("no/x.png", "folder .* does not exist")],
)  # fmt: skip
def test_image_format_refuses(tmp_path: Path, name: str, needle: str) -> None:
    with pytest.raises(DifforgeError, match=needle):
        image_format(tmp_path / name)


def test_profiling_a_class_artifact_keeps_its_batch(tiny_dit_artifact: Path) -> None:
    from difforge.profile.coldstart import cold_start
    from difforge.profile.stages import time_stages

    pipe = load(tiny_dit_artifact)
    runs = time_stages(pipe, 128, batch=2, steps=1, runs=1, warmup=0)
    assert runs.batch == 2
    cold = cold_start(tiny_dit_artifact, 128, batch=2, steps=1, threads=None)
    assert cold["first_run_s"] > 0


def test_images_per_call_respects_every_component(tiny_sd_artifact: Path) -> None:
    """The VAE decodes one image per image, the text encoder and denoiser two under CFG."""
    pipe = load(tiny_sd_artifact)
    axes = {role: entry.axes["batch"][2] for role, entry in pipe.manifest.components.items()}
    most = pipe.images_per_call(1.0)
    assert most == min(axes.values())
    assert pipe.images_per_call(7.5) == min(axes["vae_decoder"], axes["denoiser"] // 2,
                                            axes["text_encoder"] // 2)  # fmt: skip
    result = pipe(GenerateRequest(prompt=["a cat"] * most, steps=1, guidance_scale=1.0))
    assert result.images.shape[0] == most


def test_prompt_past_the_token_window_is_noted(tiny_sd_artifact: Path) -> None:
    pipe = load(tiny_sd_artifact)
    assert pipe.prompt_notes(GenerateRequest(prompt="a photo of a cat")) == []
    long = GenerateRequest(prompt=["cat " * 100, "dog", "cat " * 100], negative_prompt="cat " * 80)
    notes = pipe.prompt_notes(long)
    assert notes == [
        "the prompt is 100 tokens; the text encoder reads the first 75, the last 25 are ignored",
        "the negative prompt is 80 tokens; the text encoder reads the first 75, the last 5 are "
        "ignored",
    ]
    # What is noted is what the tokenizer cuts: 75 tokens between BOS and EOS.
    ids = pipe.tokenizer(["cat " * 100])  # type: ignore[misc]
    assert ids.shape == (1, 77) and (ids[0, 1:76] == ids[0, 1]).all()


@pytest.mark.parametrize(
    ("request_kw", "needle"),
    [
        ({"steps": 2.5}, "steps must be an integer, got 2.5"),
        ({"steps": True}, "steps must be an integer"),
        ({"seed": None}, "seed must be an integer, got None"),
        ({"seed": 2**64}, r"--seed must be at most 2\^64 - 1"),
        ({"guidance_scale": float("nan")}, "--guidance must be a finite number"),
        ({"guidance_scale": "7"}, "guidance must be a number"),
        ({"height": "256"}, "height must be an integer"),
        ({"prompt": 5}, "prompt must be text"),
        ({"prompt": ["a cat", None]}, "prompt must be text"),
        ({"prompt": "a \udcff cat"}, "the prompt is not valid Unicode text"),
        ({"latents": [[0.0]]}, "latents must have 4 dimensions"),
        ({"latents": "noise"}, "latents must be an array of numbers"),
        ({"latents": np.full((1, 4, 16, 16), np.nan, np.float32)}, "NaN or infinite"),
        ({"latents": np.zeros((1, 4, 8, 8), np.float32)}, r"latents have shape \(1, 4, 8, 8\)"),
        ({"scheduler": 3}, "scheduler must be text"),
    ],
)
def test_api_values_of_the_wrong_type_are_user_errors(
    tiny_sd_artifact: Path, request_kw: dict[str, object], needle: str
) -> None:
    pipe = load(tiny_sd_artifact, lazy=True)
    with pytest.raises(DifforgeError, match=needle):
        pipe.resolve(GenerateRequest(**request_kw))  # type: ignore[arg-type]
    assert not any(r.active for r in pipe.runners.values())  # refused before any work


def test_numpy_numbers_are_numbers(tiny_dit_artifact: Path) -> None:
    pipe = load(tiny_dit_artifact, lazy=True)
    resolved = pipe.resolve(
        GenerateRequest(
            class_label=np.int64(3), steps=np.int32(4), seed=np.uint64(5),
            guidance_scale=np.float32(2.5),
        )
    )
    assert (resolved.labels, resolved.steps, resolved.seed) == ([3], 4, 5)
    assert resolved.guidance_scale == 2.5 and isinstance(resolved.guidance_scale, float)
    assert pipe.resolve(GenerateRequest(class_label=np.array([1, 2]))).labels == [1, 2]


def test_saved_images_honour_the_umask(tmp_path: Path) -> None:
    import os

    image = np.zeros((4, 4, 3), np.uint8)
    old = os.umask(0o022)
    try:
        mode = save_image(image, tmp_path / "a.png").stat().st_mode & 0o777
        os.umask(0o077)
        private = save_image(image, tmp_path / "b.png").stat().st_mode & 0o777
    finally:
        os.umask(old)
    assert (mode, private) == (0o644, 0o600)
