"""Every shipped digits model loads, fits the size budget and reproduces its card's check."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from difforge.reference.folders import MODELS_DIR, load_denoiser, read_card

PIPELINES = ["digits-unet", "digits-unet-4step", "digits-unet-1step", "digits-dit"]
PATCHED = {
    "digits-unet-linfusion": ("digits-unet", "linfusion"),
    "digits-dit-clear": ("digits-dit", "clear"),
}
ALL = PIPELINES + list(PATCHED)
MAX_BYTES = 5_000_000


def _model(name: str) -> torch.nn.Module:
    from difforge.patches import get_patch_class

    if name in PIPELINES:
        return load_denoiser(MODELS_DIR / name)
    base, patch = PATCHED[name]
    model = load_denoiser(MODELS_DIR / base)
    folder = MODELS_DIR / name
    if patch == "linfusion":
        get_patch_class("linfusion")(checkpoint=folder).apply(model)
    else:
        from difforge.reference.folders import CLEAR_WEIGHTS

        get_patch_class("clear")(radius=4, weights=folder / CLEAR_WEIGHTS).apply(model)
    return model


def test_every_model_folder_is_listed() -> None:
    found = {p.name for p in MODELS_DIR.iterdir() if p.is_dir() and p.name.startswith("digits")}
    assert found == set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_card_and_weights(name: str) -> None:
    folder = MODELS_DIR / name
    card = read_card(folder)
    weights = sum(p.stat().st_size for p in folder.rglob("*.safetensors"))
    assert 0 < weights <= MAX_BYTES
    assert card["weights_bytes"] == weights
    metrics = card["metrics"]
    assert metrics["samples"] >= 1000  # FD is only meaningful from 1,000 samples
    for key in ("steps", "batch_size", "lr", "seed", "seconds", "torch"):
        assert key in card["training"], key
    assert f"{metrics['accuracy']:.4f}" in (folder / "README.md").read_text()
    if name in ("digits-unet", "digits-dit"):
        assert metrics["steps"] == 50 and metrics["accuracy"] >= 0.90


@pytest.mark.parametrize("name", ALL)
def test_model_reproduces_its_card_check(name: str) -> None:
    from difforge.reference.flow import sample
    from difforge.reference.quality import balanced_labels, score

    card = read_card(MODELS_DIR / name)
    metrics, check = card["metrics"], card["metrics"]["check"]
    labels = balanced_labels(check["samples"])
    images = sample(_model(name), labels, metrics["steps"], metrics["guidance"], check["seed"])
    got = score(images, labels)
    # Same seeds and code: only float summation order differs between machines.
    assert got.accuracy == pytest.approx(check["accuracy"], abs=0.03)
    assert got.fd == pytest.approx(check["fd"], rel=0.1)


def test_models_load_as_plain_diffusers_components() -> None:
    from diffusers import DiTTransformer2DModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(
        str(Path(MODELS_DIR / "digits-unet")), subfolder="unet", local_files_only=True
    )
    dit = DiTTransformer2DModel.from_pretrained(
        str(MODELS_DIR / "digits-dit"), subfolder="transformer", local_files_only=True
    )
    assert unet.config.in_channels == 1 and dit.config.sample_size == 32
