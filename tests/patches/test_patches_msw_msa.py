"""MSW-MSA: window partition algebra, dense-mask reference, shift input, defaults, undo."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import numpy as np
import pytest
import torch
from patch_testing import (
    authors_msw_partition,
    masked_attention,
    rel_err,
    tiny_unet,
    unet_inputs,
    window_mask,
)

from difforge.patches import create_patch
from difforge.patches.msw_msa import (
    SHIFT_INPUT,
    default_blocks,
    shift_table,
    window_partition,
)


@pytest.mark.parametrize(("h", "w"), [(8, 8), (6, 10), (12, 4)])
def test_shift_zero_is_four_quadrants(h: int, w: int) -> None:
    x = torch.randn(2, h * w, 3)
    windows, reverse = window_partition(x, h, w, 0)
    grid = x.view(2, h, w, 3)
    quadrants = [
        grid[:, : h // 2, : w // 2],
        grid[:, : h // 2, w // 2 :],
        grid[:, h // 2 :, : w // 2],
        grid[:, h // 2 :, w // 2 :],
    ]
    expected = torch.stack([q.reshape(2, -1, 3) for q in quadrants], dim=1).reshape(8, -1, 3)
    assert torch.equal(windows, expected)
    assert torch.equal(reverse(windows), x)


@pytest.mark.parametrize(("h", "w"), [(8, 8), (16, 12), (10, 6)])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_shift_is_roll_quadrants_unroll(h: int, w: int, k: int) -> None:
    x = torch.randn(1, h * w, 5)
    sy, sx = (h // 2) // 4 * k, (w // 2) // 4 * k
    windows, reverse = window_partition(x, h, w, torch.tensor([k]))
    rolled = torch.roll(x.view(1, h, w, 5), shifts=(-sy, -sx), dims=(1, 2)).reshape(1, h * w, 5)
    quadrants, unquadrant = window_partition(rolled, h, w, 0)
    assert torch.equal(windows, quadrants)
    y = torch.randn_like(windows)  # any per-window attention output
    unrolled = torch.roll(unquadrant(y).view(1, h, w, 5), shifts=(sy, sx), dims=(1, 2))
    assert torch.equal(reverse(y), unrolled.reshape(1, h * w, 5))


@pytest.mark.parametrize(("h", "w"), [(8, 8), (7, 9), (5, 4), (9, 12)])
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_matches_the_authors_partition(h: int, w: int, k: int) -> None:
    x = torch.randn(2, h * w, 4, dtype=torch.float64)
    wh, ww = (h + 1) // 2, (w + 1) // 2
    shift = (wh // 4 * k, ww // 4 * k)
    ours, ours_rev = window_partition(x, h, w, k)
    theirs, theirs_rev = authors_msw_partition(x, h, w, shift)
    assert torch.equal(ours, theirs)
    y = torch.randn_like(ours)
    assert torch.allclose(ours_rev(y), theirs_rev(y), rtol=0, atol=1e-12)


def test_shift_table_is_seeded_and_draws_each_quarter_alike() -> None:
    """The authors draw the quarter k in {0, 1, 2, 3} with probability 1/4 each, afresh per
    call; the table must too (checked by counts, not by rebuilding the draw)."""
    table = shift_table(50, seed=7)
    assert table == shift_table(50, seed=7)
    assert table != shift_table(50, seed=8)
    assert shift_table(0, seed=0) == []
    assert shift_table(20, 7) == table[:20]  # a longer run extends a shorter one
    draws = [k for seed in range(40) for k in shift_table(500, seed)]
    assert set(draws) == {0, 1, 2, 3}
    counts = np.bincount(draws, minlength=4)
    expected = len(draws) / 4
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 16.3, counts  # 3 degrees of freedom, p = 0.001
    pairs = np.bincount([4 * a + b for a, b in itertools.pairwise(draws)], minlength=16)
    expected_pairs = (len(draws) - 1) / 16
    chi2_pairs = float(((pairs - expected_pairs) ** 2 / expected_pairs).sum())
    assert chi2_pairs < 37.7, pairs  # independent steps: 15 degrees of freedom, p = 0.001


def test_the_runtime_rebuilds_the_patch_table() -> None:
    """What the manifest stores for the shift input gives the runtime the patch's table."""
    from difforge.artifact.step_plan import StepPlan

    spec = create_patch("msw-msa").extra_inputs()[SHIFT_INPUT]
    plan = StepPlan.from_dict(
        {"variants": {"base": "denoiser"}, "inputs": {SHIFT_INPUT: spec.step_input().to_dict()}}
    )
    for steps, seed in ((1, 0), (20, 3), (50, 11)):
        assert plan.tables(steps, seed)[SHIFT_INPUT] == shift_table(steps, seed)


class _DenseWindowProcessor:
    """attn1 computed as full attention under the MSW-MSA window mask, in float64."""

    def __init__(self, mask: torch.Tensor) -> None:
        self.mask = mask

    def __call__(self, attn: Any, hidden_states: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        b, n, c = hidden_states.shape
        heads = attn.heads
        q, k, v = (
            layer(hidden_states.double()).view(b, n, heads, -1).transpose(1, 2)
            for layer in (attn.to_q.double(), attn.to_k.double(), attn.to_v.double())
        )
        out = masked_attention(q, k, v, self.mask, q.shape[-1] ** -0.5)
        out = out.transpose(1, 2).reshape(b, n, c)
        return attn.to_out[0].double()(out).to(hidden_states.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [0, 3])
def test_module_matches_dense_window_mask(dtype: torch.dtype, k: int) -> None:
    unet = tiny_unet().to(dtype)
    block = unet.down_blocks[0].attentions[0]
    reference = copy.deepcopy(block).double()
    h, w = 16, 12
    reference.transformer_blocks[0].attn1.set_processor(_DenseWindowProcessor(window_mask(h, w, k)))
    patch = create_patch("msw-msa:blocks=down_blocks.0.attentions.0")
    patch.apply(unet)
    patch._shared.quarter = torch.tensor([k])  # as the UNet's pre-hook would set it
    x = torch.randn(2, 32, h, w, dtype=torch.float64)
    ctx = torch.randn(2, 7, 64, dtype=torch.float64)
    with torch.no_grad():
        out = block(x.to(dtype), encoder_hidden_states=ctx.to(dtype)).sample
        ref = reference(x, encoder_hidden_states=ctx).sample
    assert rel_err(out, ref) <= (1e-6 if dtype == torch.float32 else 1e-10)


def test_default_blocks_per_architecture() -> None:
    from diffusers import UNet2DConditionModel

    common: dict[str, Any] = {
        "cross_attention_dim": 8,
        "attention_head_dim": 2,
        "norm_num_groups": 4,
    }
    sd15 = UNet2DConditionModel(
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        **common,
    )
    sdxl = UNet2DConditionModel(
        block_out_channels=(8, 8, 8),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 2),
        **common,
    )
    assert default_blocks(sd15) == ["down_blocks.0.attentions", "up_blocks.3.attentions"]
    assert create_patch("msw-msa").apply(sd15).replaced == [
        f"{p}.transformer_blocks.0.attn1"
        for p in [
            "down_blocks.0.attentions.0",
            "down_blocks.0.attentions.1",
            "up_blocks.3.attentions.0",
            "up_blocks.3.attentions.1",
            "up_blocks.3.attentions.2",
        ]
    ]
    assert default_blocks(sdxl) == ["down_blocks.1.attentions", "up_blocks.1.attentions"]
    assert create_patch("msw-msa").apply(sdxl).count == 10
    assert default_blocks(tiny_unet()) == ["down_blocks.0.attentions", "up_blocks.1.attentions"]


def test_shift_input_routing_and_undo(
    caplog: pytest.LogCaptureFixture, diffusers_logs: None
) -> None:
    unet = tiny_unet()
    x, t, ctx = unet_inputs(16, 24)
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    with torch.no_grad():
        ref = unet(x, t, ctx).sample
    patch = create_patch("msw-msa")
    report = patch.apply(unet)
    spec = report.extra_inputs[SHIFT_INPUT]
    assert (spec.dtype, spec.shape, spec.kwargs_key, spec.default) == (
        "int64",
        (1,),
        "cross_attention_kwargs",
        [0],
    )
    assert spec.table(6, 0) == shift_table(6, 0)

    def run(shift: Any = None) -> torch.Tensor:
        kwargs = None if shift is None else {SHIFT_INPUT: shift}
        with torch.no_grad():
            return unet(x, t, ctx, cross_attention_kwargs=kwargs).sample

    windowed = run()
    assert not torch.allclose(windowed, ref)
    assert torch.equal(run(spec.example()), windowed)  # absent = 0
    assert torch.equal(run(torch.tensor([4])), windowed)  # modulo 4
    shifted = [run(torch.tensor([k])) for k in (1, 2, 3)]
    assert all(not torch.equal(s, windowed) for s in shifted)
    assert "are not expected" not in caplog.text  # the key never reaches a processor
    patch.undo()
    assert all(torch.equal(state[k], v) for k, v in unet.state_dict().items())
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in unet.modules())
    with torch.no_grad():
        assert torch.equal(unet(x, t, ctx).sample, ref)


def test_composes_with_linfusion_in_either_order() -> None:
    x, t, ctx = unet_inputs(16, 16)
    outs = []
    for order in (["linfusion", "msw-msa"], ["msw-msa", "linfusion"]):
        unet = tiny_unet()
        patches = [create_patch(name) for name in order]
        for p in patches:
            p.apply(unet)
        with torch.no_grad():
            outs.append(
                unet(x, t, ctx, cross_attention_kwargs={SHIFT_INPUT: torch.tensor([2])}).sample
            )
        for p in reversed(patches):
            p.undo()
    assert torch.equal(outs[0], outs[1])
