"""HiDiffusion RAU-Net against a direct strided, dilated conv and the authors' schedule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conv_testing import rel_err, run, tiny_unet, unet_inputs

from difforge.artifact.step_plan import StepRule, first_match
from difforge.patches.raunet import RauConv2d, RAUNetPatch


def test_rau_conv_equals_direct_stride4_dilated_conv() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1)
    mod = RauConv2d(conv)
    x = torch.randn(1, 8, 32, 36)
    assert torch.equal(mod(x), conv(x))
    mod.active = True
    ref = F.conv2d(x, conv.weight, conv.bias, stride=4, padding=2, dilation=2)
    assert mod(x).shape == (1, 8, 8, 9)
    assert torch.equal(mod(x), ref)


def test_tiny_unet_variants_shapes_and_base_identity() -> None:
    unet = tiny_unet()
    args = unet_inputs(32, 32)
    ref = run(unet, args)
    keys = list(unet.state_dict())
    patch = RAUNetPatch(t2_ratio=0.3)
    report = patch.apply(unet)
    assert report.replaced[0] == "down_blocks.0.downsamplers.0.conv"
    assert patch.variants() == ["base", "rau_conv", "rau_full"]
    assert list(unet.state_dict()) == keys
    assert torch.equal(run(unet, args), ref)
    seen: dict[str, tuple[int, ...]] = {}

    def grab(_m: torch.nn.Module, _a: object, out: torch.Tensor) -> None:
        seen["down1"] = tuple(out[0].shape)

    handle = unet.down_blocks[1].register_forward_hook(grab)
    for variant in ("rau_conv", "rau_full"):
        patch.set_variant(variant)
        for hw in [(32, 32), (24, 40)]:
            out = run(unet, unet_inputs(*hw))
            assert out.shape == (1, 4, *hw)
            quarter = (-(-hw[0] // 4), -(-hw[1] // 4))
            if variant == "rau_conv":
                assert seen["down1"][-2:] == quarter
            else:
                assert seen["down1"][-2:] == (-(-quarter[0] // 2), -(-quarter[1] // 2))
        assert rel_err(run(unet, args), ref) > 1e-3
    handle.remove()
    patch.set_variant("base")
    assert torch.equal(run(unet, args), ref)
    patch.undo()
    assert unet.num_upsamplers == 1
    assert type(unet.down_blocks[0].downsamplers[0].conv) is torch.nn.Conv2d
    assert torch.equal(run(unet, args), ref)


@pytest.mark.parametrize(
    "options,layout,expected",
    [
        # SD1.5 at 1024 (latent 128 < 256): T1 = 0.4, T2 = 0
        ({"resolution": 1024}, "sd15", {i: ("rau_conv" if i < 20 else "base") for i in range(50)}),
        # SD1.5 at 2048: conv < int(0.7 S), pool < int(0.3 S)
        (
            {"resolution": 2048},
            "sd15",
            {i: "rau_full" if i < 15 else "rau_conv" if i < 35 else "base" for i in range(50)},
        ),
        # SDXL at 2048 (latent 256 < 512), aggressive: conv < 8, pool in [8, 20)
        (
            {"resolution": 2048, "layout": "sdxl"},
            "sdxl",
            {i: "rau_conv" if i < 8 else "rau_pool" if i < 20 else "base" for i in range(50)},
        ),
        # SDXL at 4096: pool (T1 = 0.7), conv (T2 = 0.3)
        (
            {"resolution": 4096, "layout": "sdxl"},
            "sdxl",
            {i: "rau_full" if i < 15 else "rau_pool" if i < 35 else "base" for i in range(50)},
        ),
    ],
)
def test_authors_schedules(options: dict, layout: str, expected: dict[int, str]) -> None:
    patch = RAUNetPatch(**options)
    plan = patch.schedule(layout, options["resolution"] // 8)
    rules = tuple(
        StepRule(r["variant"], r["from"], r["to"])
        for r in patch._rules_from(plan["conv"], plan["pool"])
    )
    for i, variant in expected.items():
        assert first_match(rules, "base", i, 50) == variant, i
    # T1 = int(S * ratio) for another step count, as the authors compute it.
    if layout == "sd15" and options["resolution"] == 1024:
        assert sum(first_match(rules, "base", i, 20) != "base" for i in range(20)) == int(20 * 0.4)


def test_sdxl_like_unet() -> None:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32,
        block_out_channels=(16, 32, 32),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=8,
    ).eval()
    patch = RAUNetPatch(resolution=4096)
    report = patch.apply(unet)
    assert report.replaced == [
        "down_blocks.1.downsamplers.0.conv",
        "down_blocks.1.attentions.0",
        "up_blocks.1.attentions.1",
    ]
    assert patch.variants() == ["base", "rau_pool", "rau_full"]
    args = unet_inputs(32, 32)
    ref = run(unet, args)
    for variant in patch.variants():
        patch.set_variant(variant)
        out = run(unet, args)
        assert out.shape == ref.shape and torch.isfinite(out).all()
    patch.set_variant("base")
    assert torch.equal(run(unet, args), ref)
    patch.undo()


def test_a_build_range_across_the_authors_switch_is_refused() -> None:
    from difforge.errors import DifforgeError

    patch = RAUNetPatch()
    patch.bind_resolution(1024, 1536, 4096)  # SD1.5 layout: the switch is at latent 256
    with pytest.raises(DifforgeError, match=r"1024\.\.4096 px cross the authors' switch at 2048"):
        patch.apply(tiny_unet())
    # One side of the switch, or a schedule the user fixed, is fine.
    for fixed, lo, hi in ((None, 1024, 2040), (None, 2048, 4096), (1024, 1024, 4096)):
        patch = RAUNetPatch(resolution=fixed)
        patch.bind_resolution(lo, lo, hi)
        report = patch.apply(tiny_unet())
        assert report.count > 0
        assert patch.options["resolution"] == (fixed or lo)
