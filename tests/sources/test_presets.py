"""Each preset: built from its config with seeded weights, the components its kind needs, and
a denoiser that runs at its default size."""

from __future__ import annotations

import pytest
import torch

from difforge.exporter.components import components_for
from difforge.sources.presets import DESCRIPTIONS, load_preset
from tests.registry_cases import PRESET_CASES


@pytest.mark.parametrize("name", sorted(PRESET_CASES))
def test_preset_builds_its_components_with_seeded_weights(name: str) -> None:
    kind, roles = PRESET_CASES[name]
    source = load_preset(name, seed=0)
    assert source.kind == kind and source.random_weights
    assert name in DESCRIPTIONS and "random" in source.description["weights"]
    components = components_for(source, max_batch=1)
    assert tuple(components) == roles
    again = load_preset(name, seed=0).denoiser.state_dict()
    other = load_preset(name, seed=1).denoiser.state_dict()
    weights = source.denoiser.state_dict()
    assert all(torch.equal(weights[k], again[k]) for k in weights)
    assert any(not torch.equal(weights[k], other[k]) for k in weights if weights[k].numel() > 1)
    denoiser = components["denoiser"]
    feeds = denoiser.spec.sample_inputs(denoiser.spec.profile("opt"))
    with torch.no_grad():
        out = denoiser.module(*(feeds[t.name] for t in denoiser.spec.inputs))
    assert out.shape == feeds["sample"].shape and torch.isfinite(out).all()
