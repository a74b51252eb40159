"""ScaleCrafter re-dilation, NDCFG and dispersion against independent references."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conv_testing import DATA, rel_err, run, tiny_unet, unet_inputs

from difforge.artifact.step_plan import StepRule, first_match
from difforge.errors import DifforgeError
from difforge.patches.disperse import dispersion_transform, inflate_weight, load_transform
from difforge.patches.redilate import RedilatedConv2d, ReDilatePatch, step_ratio
from difforge.runtime.guidance import cfg, ndcfg


def _conv(stride: int = 1, seed: int = 0) -> torch.nn.Conv2d:
    torch.manual_seed(seed)
    return torch.nn.Conv2d(6, 5, 3, stride=stride, padding=1).eval()


@pytest.mark.parametrize("scale", [2.0, 3.0, 4.0])
def test_integer_scale_is_plain_dilated_conv(scale: float) -> None:
    conv = _conv()
    mod = RedilatedConv2d(conv, None)
    mod.configs["v"] = (scale, False)
    mod.variant = "v"
    x = torch.randn(2, 6, 19, 23)
    d = int(scale)
    ref = F.conv2d(x, conv.weight, conv.bias, dilation=d, padding=d)
    assert torch.equal(mod(x), ref)


def _three_op(conv: torch.nn.Conv2d, x: torch.Tensor, scale: float) -> torch.Tensor:
    # The authors' ReDilateConvProcessor, written out (model.py).
    d = math.ceil(scale)
    f = d / scale
    h, w = x.shape[-2:]
    x1 = F.interpolate(x, size=(round(h * f), round(w * f)), mode="bilinear")
    y = F.conv2d(x1, conv.weight, conv.bias, conv.stride, padding=d, dilation=d)
    return F.interpolate(
        y, size=(int(h / conv.stride[0]), int(w / conv.stride[1])), mode="bilinear"
    )


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("scale", [2.5, 1.5, 3.0])
def test_fractional_scale_matches_three_op_reference(stride: int, scale: float) -> None:
    conv = _conv(stride)
    mod = RedilatedConv2d(conv, None)
    mod.configs["v"] = (scale, False)
    mod.variant = "v"
    for hw in [(20, 24), (19, 23)]:
        x = torch.randn(1, 6, *hw)
        torch.testing.assert_close(mod(x), _three_op(conv, x, scale), rtol=0, atol=1e-6)


def test_base_variant_bit_identical_and_undo() -> None:
    unet = tiny_unet()
    args = unet_inputs(32, 32)
    ref = run(unet, args)
    keys = list(unet.state_dict())
    patch = ReDilatePatch(scale=2.5)
    report = patch.apply(unet)
    assert patch.variants() == ["base", "redilated"]
    assert "down_blocks.0.resnets.0.conv1" not in report.replaced
    assert "up_blocks.1.resnets.0.conv1" not in report.replaced
    assert "up_blocks.0.upsamplers.0.conv" in report.replaced
    assert all("conv_in" not in n and "conv_out" not in n for n in report.replaced)
    assert list(unet.state_dict()) == keys
    assert torch.equal(run(unet, args), ref)
    patch.set_variant("redilated")
    assert rel_err(run(unet, args), ref) > 1e-3
    patch.set_variant("base")
    assert torch.equal(run(unet, args), ref)
    assert patch.step_rules() == [StepRule("redilated", 0.0, 0.6)]
    patch.undo()
    assert type(unet.down_blocks[1].resnets[0].conv1) is torch.nn.Conv2d
    assert torch.equal(run(unet, args), ref)


def test_unet_level_integer_scale_equals_dilated_convs() -> None:
    unet = tiny_unet()
    args = unet_inputs(32, 32)
    patch = ReDilatePatch(scale=2)
    report = patch.apply(unet)
    patch.set_variant("redilated")
    got = run(unet, args)
    patch.undo()
    # Reference: the same convs rebuilt with dilation 2, padding 2.
    for name in report.replaced:
        conv = unet.get_submodule(name)
        conv.dilation, conv.padding = (2, 2), (2, 2)
    assert torch.equal(got, run(unet, args))


@pytest.mark.parametrize("d,tau", [(4, 30), (3, 35), (2.5, 30), (4, 29)])
def test_progressive_step_rules(d: float, tau: int) -> None:
    unet = tiny_unet()
    patch = ReDilatePatch(scale=d, tau=tau, progressive=True)
    patch.apply(unet)
    rules = tuple(patch.step_rules())
    convs = [m for m in unet.modules() if isinstance(m, RedilatedConv2d)]
    for n in (50,):
        for i in range(n):
            variant = first_match(rules, patch.variants()[0], i, n)
            expected = max(math.ceil(d * ((tau - i) / tau)), 2) if i < tau else None
            got = convs[0].configs.get(variant, (None, False))[0]
            assert got == expected, (i, variant, got, expected)
    patch.undo()


def test_step_ratio_floors_like_integer_steps() -> None:
    for k in range(51):
        r = step_ratio(k)
        assert all(int(r * n) == k * n // 50 for n in (1, 7, 20, 50, 100, 999))


def test_settings_file_in_authors_format(tmp_path: Path) -> None:
    path = tmp_path / "tiny.txt"
    path.write_text("down_blocks.1.resnets.0.conv1:2\nmid_block.resnets.0.conv2:3\n")
    unet = tiny_unet()
    patch = ReDilatePatch(settings=path)
    report = patch.apply(unet)
    assert report.replaced == ["down_blocks.1.resnets.0.conv1", "mid_block.resnets.0.conv2"]
    assert patch.variants() == ["base", "redilated"]
    patch.undo()
    bad = tmp_path / "bad.txt"
    bad.write_text("conv_in:2\n")
    with pytest.raises(DifforgeError, match="conv_in"):
        ReDilatePatch(settings=bad).apply(unet)


def test_ndcfg_formula_and_weak_variant() -> None:
    rng = np.random.default_rng(0)
    weak_u, strong_u, strong_c = (rng.standard_normal((2, 4, 8, 8)) for _ in range(3))
    w = 7.5
    got = ndcfg(weak_u, strong_u, strong_c, w)
    np.testing.assert_allclose(got, weak_u + w * (strong_c - strong_u), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(cfg(strong_u, strong_c, w), strong_u + w * (strong_c - strong_u))
    unet = tiny_unet()
    patch = ReDilatePatch(scale=3, weak_scale=2, ndcfg_tau=35)
    patch.apply(unet)
    assert patch.variants() == ["base", "redilated", "weak"]
    g = patch.guidance()
    assert g is not None and g.mode == "ndcfg" and g.weak == "weak"
    assert int(g.end * 50) == 35
    assert g.weak_rules == (StepRule("weak", 0.0, g.end),)
    patch.undo()


def test_dispersion_transform_matches_shipped_R() -> None:
    shipped = load_transform(DATA / "R20to1_new.mat")
    ours = dispersion_transform(3, 5, input_size=3, scale=2, eta=0.05)
    assert ours.shape == shipped.shape == (25, 9)
    assert np.abs(ours - shipped).max() < 1e-12
    assert ours[12, 4] == pytest.approx(1.0, abs=1e-12)
    assert np.count_nonzero(np.abs(ours[:, 4]) > 1e-12) == 1  # centre -> centre only
    sums = ours.sum(0).reshape(3, 3)
    np.testing.assert_allclose(sums[[0, 0, 2, 2], [0, 2, 0, 2]], 1.1267, atol=1e-4)
    np.testing.assert_allclose(sums[[0, 1, 1, 2], [1, 0, 2, 1]], 1.0613, atol=1e-4)


def test_inflate_ordering_against_hand_built_kernel() -> None:
    r = dispersion_transform()
    w3 = torch.zeros(2, 3, 3, 3, dtype=torch.float64)
    w3[1, 2, 0, 2] = 1.0  # top-right tap of (out 1, in 2): column 2 of R, row-major
    w5 = inflate_weight(w3, r)
    expected = torch.from_numpy(r[:, 2].reshape(5, 5))
    torch.testing.assert_close(w5[1, 2], expected, rtol=0, atol=0)
    assert w5[0].abs().max() == 0 and w5[1, :2].abs().max() == 0


def test_dispersed_variant_uses_inflated_kernel_half_dilation() -> None:
    unet = tiny_unet()
    patch = ReDilatePatch(scale=4, disperse=True, inflate_tau=10)
    report = patch.apply(unet)
    assert patch.variants() == ["base", "d2_disp", "d4"]
    rules = tuple(patch.step_rules())
    assert [first_match(rules, "base", i, 50) for i in (0, 9, 10, 29, 30)] == [
        "d2_disp",
        "d2_disp",
        "d4",
        "d4",
        "base",
    ]
    name = report.replaced[0]
    conv = unet.get_submodule(name)
    assert isinstance(conv, RedilatedConv2d)
    patch.set_variant("d2_disp")
    x = torch.randn(1, conv.in_channels, 16, 16)
    w5 = inflate_weight(conv.weight.detach(), dispersion_transform())
    ref = F.conv2d(x, w5, conv.bias, padding=4, dilation=2)
    torch.testing.assert_close(conv(x), ref, rtol=0, atol=1e-5)
    args = unet_inputs(32, 32)
    assert torch.isfinite(run(unet, args)).all()
    patch.undo()


def test_guidance_module_imports_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys, difforge.runtime.guidance; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
