"""Checks of the DeepCache reference itself (tests/patches/deepcache_reference.py)."""

from __future__ import annotations

from typing import Any

import diffusers
import pytest
import torch

from tests.patches.deepcache_reference import DeepCacheReference, quad_center_full_steps

pytestmark = pytest.mark.usefixtures("one_thread")


def _unet(mid_block_type: str | None) -> Any:
    torch.manual_seed(0)
    return diffusers.UNet2DConditionModel(
        sample_size=32,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        mid_block_type=mid_block_type,
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=2,
        cross_attention_dim=32,
    ).eval()


def _inputs(step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(1, 1, 32, 32, generator=g)
    ehs = torch.randn(1, 4, 32, generator=g)
    return x, torch.tensor([900 - 100 * step]), ehs


def _run(unet: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    return unet(x, t, encoder_hidden_states=e, return_dict=False)[0]


MIDS = pytest.mark.parametrize("mid", [None, "UNetMidBlock2DCrossAttn"])


@MIDS
@torch.no_grad()
def test_interval_one_is_exact_and_disable_restores(mid: str | None) -> None:
    unet = _unet(mid)
    expected = [_run(unet, *_inputs(i)) for i in range(4)]
    ref = DeepCacheReference(unet, interval=1, branch=0)
    ref.enable()
    assert (("mid", "mid_block", 0, 0) in ref.cache_keys) == (mid is not None)
    assert ("down", "downsampler", 0, 1) in ref.cache_keys
    assert ("up", "upsampler", 2, 0) in ref.cache_keys
    assert "forward" in unet.up_blocks[2].resnets[0].__dict__
    for i in range(4):
        ref.set_step(i)
        assert torch.equal(_run(unet, *_inputs(i)), expected[i])
    ref.disable()
    assert not any("forward" in m.__dict__ for m in unet.modules())
    with pytest.raises(KeyError):
        ref.cached(("up", "resnet", 0, 1))


@MIDS
@torch.no_grad()
def test_interval_three_skips_deep_modules(mid: str | None) -> None:
    unet = _unet(mid)
    plain = [_run(unet, *_inputs(i)) for i in range(4)]
    ref = DeepCacheReference(unet, interval=3, branch=0)
    ref.enable()
    key = ("up", "resnet", 0, 1)  # last up block's first resnet: cached at branch 0
    outs: list[torch.Tensor] = []
    stored = stored_copy = torch.empty(0)
    for i in range(4):
        ref.set_step(i)
        x, t, e = _inputs(i)
        # Perturbed runs first, so the real run of step i is the one that fills the cache.
        other_e = _run(unet, x, t, e + 1.0)
        other_x = _run(unet, x + 1.0, t, e)
        outs.append(_run(unet, x, t, e))
        if i == 0:
            cached = ref.cached(key)
            assert isinstance(cached, torch.Tensor)
            stored, stored_copy = cached, cached.clone()
        if i % 3 == 0:  # full step: exact, and the cross-attention sees the prompt
            assert torch.equal(outs[i], plain[i])
            assert not torch.equal(other_e, outs[i])
        else:  # skip step: only conv_in, the time embedding and up resnet (0, 0) run
            assert not torch.allclose(outs[i], plain[i])
            assert torch.equal(other_e, outs[i])
            assert not torch.equal(other_x, outs[i])
            assert ref.cached(key) is stored and torch.equal(stored_copy, stored)
        if i == 2:
            shallow_in = torch.cat([stored, unet.conv_in(x)], dim=1)
    ref.disable()
    # Step 2 by hand: cached deep features + fresh shallow ones through the original modules.
    x, t, _ = _inputs(2)
    emb = unet.time_embedding(unet.get_time_embed(sample=x, timestep=t), None)
    h = unet.up_blocks[2].resnets[1](shallow_in, emb)
    by_hand = unet.conv_out(unet.conv_act(unet.conv_norm_out(h)))
    assert torch.equal(by_hand, outs[2])


@torch.no_grad()
def test_full_steps_predicate_and_branch_layers() -> None:
    unet = _unet(None)
    ref = DeepCacheReference(unet, interval=3, branch=1, full_steps=lambda i: i in (0, 1))
    assert (ref.cache_block_id, ref.cache_layer_id) == (0, 1)
    assert not ref.is_skip_step(1, 1, "down") and not ref.is_skip_step(0, 0, "mid")
    ref.set_step(2)
    assert ref.is_skip_step(0, 1, "down") and not ref.is_skip_step(0, 0, "down")
    assert ref.is_skip_step(0, 2, "up") and not ref.is_skip_step(0, 1, "up")
    assert ref.is_skip_step(1, 0, "down") and ref.is_skip_step(0, 0, "mid")
    plain = [_run(unet, *_inputs(i)) for i in range(3)]
    ref.enable()
    outs = []
    for i in range(3):
        ref.set_step(i)
        outs.append(_run(unet, *_inputs(i)))
    ref.disable()  # Step 1 is full under the predicate although 1 % 3 != 0; step 2 is not.
    assert torch.equal(outs[0], plain[0]) and torch.equal(outs[1], plain[1])
    assert not torch.allclose(outs[2], plain[2])


def test_quad_center_full_steps() -> None:
    steps = quad_center_full_steps(50, 3, 15, 1.4)
    assert steps[0] == 0
    assert steps == sorted(set(steps))
    assert len(steps) == 17 and all(0 <= s < 50 for s in steps)
    # Output of the authors' sample_from_quad_center(50, 17, center=15, pow=1.4), sorted.
    assert steps == [0, 3, 6, 8, 11, 13, 15, 17, 20, 22, 25, 28, 32, 35, 38, 42, 46]
    assert quad_center_full_steps(7, 1, 3, 1.2) == list(range(7))
    with pytest.raises(ValueError, match="suitable pow"):
        quad_center_full_steps(10, 2, 5, 1.2)
    with pytest.raises(ValueError, match="suitable pow"):
        quad_center_full_steps(50, 3, 15, 1.0)
