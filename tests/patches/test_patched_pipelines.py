"""Patched models end to end: compile, run on the torch-free runtime, and match the patched
PyTorch pipeline (same weights, latents, per-step variants and per-step inputs) within 2/255."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from shared_exports import shared_unpatched_exports

from difforge import CompileConfig, ExportConfig, ResolutionRange, compile
from difforge.runtime import GenerateRequest, load
from tests.reference_pipelines import patched_reference
from tests.registry_cases import PATCH_CASES

pytestmark = pytest.mark.slow

STEPPED = {"redilate", "raunet", "deepcache", "faster-diffusion", "ras"}
CASES = PATCH_CASES


@pytest.fixture(scope="module")
def unpatched_exports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The cases share their text encoders' and VAE decoders' exports (patches change only the
    denoiser; identical components export to identical bytes): see shared_exports.py."""
    with shared_unpatched_exports(tmp_path_factory.mktemp("unpatched-exports")):
        yield


def _compile(tmp: Path, preset: str, patch: str, size: int) -> Path:
    res = ResolutionRange() if preset == "tiny-dit" else ResolutionRange(128, size, 256)
    # Per-graph verification is left out: the images are held to the patched PyTorch pipeline
    # below, end to end (tests/patches/test_*_export.py verify the graphs themselves).
    cfg = ExportConfig(
        output=tmp / "art",
        preset=preset,
        patches=[patch],
        resolution=res,
        max_batch=1,
        verify=False,
    )
    return compile(CompileConfig(export=cfg))


@pytest.mark.parametrize(("preset", "patch", "size"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
@pytest.mark.usefixtures("unpatched_exports")
def test_patched_artifact_matches_patched_pytorch(
    tmp_path: Path, preset: str, patch: str, size: int
) -> None:
    artifact = _compile(tmp_path, preset, patch, size)
    pipe = load(artifact)
    assert pipe.manifest.patches and pipe.manifest.patches[0]["count"] >= 1
    steps, seed = 6, 5
    latents = np.random.default_rng(7).standard_normal(
        (1, 4, size // 8, size // 8), dtype=np.float32
    )
    prompt, label = "a castle on a hill", 3
    conditioning = {"prompt": prompt} if pipe.text_conditioned else {"class_label": label}
    result = pipe(
        GenerateRequest(
            **conditioning,  # type: ignore[arg-type]
            steps=steps,
            seed=seed,
            height=size,
            width=size,
            latents=latents,
        )
    )
    plan = pipe.manifest.plan
    assert result.request["schedule"] == plan.schedule(steps)
    if patch.split(":")[0] in STEPPED:
        # Not vacuous: the plan really switches graphs within these steps.
        assert len(plan.variants) > 1 and len(set(plan.schedule(steps))) > 1, plan
    ref = patched_reference(preset, [patch], latents, steps, seed, plan, prompt, label)
    ours = result.images[0]
    diff = int(np.abs(ours.astype(int) - ref.astype(int)).max())
    assert diff <= 2, f"{patch}: max pixel difference {diff}/255"
    assert ours.std() > 1
