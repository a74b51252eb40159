"""Each patched tiny UNet, one variant per graph (set_variant before export), through
torch.onnx.export(dynamo=True) with dynamic H, W, on ONNX Runtime CPU at two sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conv_testing import export_and_compare, tiny_unet

from difforge.patches.raunet import RAUNetPatch
from difforge.patches.redilate import ReDilatePatch
from difforge.patches.reparam import ReparamPatch
from difforge.sources.presets import build_tiny_lk_unet

pytestmark = pytest.mark.slow

TOL = 1e-4
SIZES = [(32, 32), (24, 40)]


def test_redilate_fractional_exports(tmp_path: Path) -> None:
    unet = tiny_unet()
    patch = ReDilatePatch(scale=2.5)
    patch.apply(unet)
    patch.set_variant("redilated")
    errors = export_and_compare(unet, tmp_path / "redilated.onnx", SIZES)
    print("redilate s=2.5 ORT vs torch:", errors)
    assert max(errors) <= TOL


def test_raunet_exports(tmp_path: Path) -> None:
    unet = tiny_unet()
    patch = RAUNetPatch(t2_ratio=0.3)
    patch.apply(unet)
    patch.set_variant("rau_full")
    errors = export_and_compare(unet, tmp_path / "rau_full.onnx", SIZES)
    print("raunet rau_full ORT vs torch:", errors)
    assert max(errors) <= TOL


def test_reparam_exports(tmp_path: Path) -> None:
    unet = build_tiny_lk_unet()
    ReparamPatch().apply(unet)
    errors = export_and_compare(unet, tmp_path / "reparam.onnx", SIZES)
    print("reparam ORT vs torch:", errors)
    assert max(errors) <= TOL
    with torch.no_grad():
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in unet.modules())
