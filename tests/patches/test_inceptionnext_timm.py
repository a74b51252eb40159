"""difforge's InceptionDWConv2d against tensors produced by timm's own module."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from difforge.sources.backbones.inceptionnext import InceptionDWConv2d

DATA = Path(__file__).parent / "data" / "inceptionnext_timm.safetensors"


def _cases() -> list[tuple[int, int, int, float]]:
    with safe_open(str(DATA), "pt") as fh:
        return [tuple(c) for c in json.loads(fh.metadata()["cases"])]


@pytest.mark.parametrize("index", range(2))
def test_matches_timm(index: int) -> None:
    channels, square, band, ratio = _cases()[index]
    tensors = load_file(str(DATA))
    prefix = f"case{index}."
    mixer = InceptionDWConv2d(channels, square_kernel_size=square, band_kernel_size=band,
                              branch_ratio=ratio).eval()
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    x, y = state.pop("input"), state.pop("output")
    mixer.load_state_dict(state)  # timm's parameter names, unchanged
    with torch.no_grad():
        torch.testing.assert_close(mixer(x), y, rtol=1e-5, atol=1e-5)
        folded = mixer.fold()
        torch.testing.assert_close(folded(x), y, rtol=1e-5, atol=1e-4)
