"""Checks of the Faster Diffusion reference itself (tests/patches/faster_diffusion_reference.py)."""

from __future__ import annotations

from typing import Any

import diffusers
import pytest
import torch

from tests.patches.faster_diffusion_reference import (
    faster_diffusion_latents,
    key_steps,
    step_groups,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _unet(mid_block_type: str | None = "UNetMidBlock2DCrossAttn") -> Any:
    torch.manual_seed(0)
    return diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        mid_block_type=mid_block_type,
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=8,
        cross_attention_dim=32,
    ).eval()


def _scheduler(spacing: str = "leading") -> diffusers.DDIMScheduler:
    return diffusers.DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        timestep_spacing=spacing,
    )


def _inputs(batch: int, cfg: bool, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    latents = torch.randn(batch, 4, size, size, generator=g)
    text = torch.randn((2 if cfg else 1) * batch, 5, 32, generator=g)
    return latents, text


@torch.no_grad()
def _plain(
    unet: Any,
    latents: torch.Tensor,
    text: torch.Tensor,
    num_steps: int,
    guidance_scale: float,
    noise: float = 0.0,
    threshold: float = 500.0,
    noise_before_unet: bool = False,
) -> torch.Tensor:
    """A plain diffusers DDIM loop.

    The prior noise is added at timesteps below ``threshold``: after the U-Net call, before
    the scheduler step (the authors' parallel pipeline), or before the U-Net call (their
    normal pipeline).
    """
    scheduler = _scheduler()
    scheduler.set_timesteps(num_steps)
    cfg = guidance_scale > 1
    init = latents.clone()
    for t in scheduler.timesteps:
        add_noise = bool(noise) and float(t) < threshold
        if add_noise and noise_before_unet:
            latents = latents + noise * init
        model_input = torch.cat([latents] * 2) if cfg else latents
        model_input = scheduler.scale_model_input(model_input, t)
        eps = unet(model_input, t, encoder_hidden_states=text).sample
        if cfg:
            uncond, cond = eps.chunk(2)
            eps = uncond + guidance_scale * (cond - uncond)
        if add_noise and not noise_before_unet:
            latents = latents + noise * init
        latents = scheduler.step(eps, t, latents, return_dict=False)[0]
    return latents


def _faster(
    unet: Any, latents: torch.Tensor, text: torch.Tensor, num_steps: int, **kwargs: Any
) -> torch.Tensor:
    kwargs.setdefault("guidance_scale", 5.0)
    scheduler = _scheduler(kwargs.pop("spacing", "leading"))
    return faster_diffusion_latents(unet, scheduler, latents, text, num_steps, **kwargs)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_key_steps_and_groups() -> None:
    assert key_steps("50ls", 50) == [0, 1, 2, 3, 5, 10, 15, 25, 35]
    assert key_steps("50ls", 20) == [0, 1, 2, 3, 5, 10, 15]
    assert key_steps("50ls", 3) == [0, 1, 2]
    assert key_steps(3, 8) == [0, 3, 6]
    assert key_steps(5, 10) == [0, 5]
    assert key_steps(1, 4) == [0, 1, 2, 3]
    assert key_steps(9, 4) == [0]
    assert step_groups(3, 8) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    groups = step_groups("50ls", 50)
    assert [g[0] for g in groups] == key_steps("50ls", 50)
    assert groups[-1] == list(range(35, 50)) and sum(map(len, groups)) == 50
    for bad in ("50ls2", 0, -2):
        with pytest.raises(ValueError):
            key_steps(bad, 10)
    with pytest.raises(TypeError):
        key_steps(True, 10)


@pytest.mark.parametrize(
    ("mid", "size"),
    [
        ("UNetMidBlock2DCrossAttn", 8),
        (None, 8),
        ("UNetMidBlock2D", 8),
        ("UNetMidBlock2DCrossAttn", 7),
    ],
)
def test_every_step_a_key_step_is_the_plain_loop(mid: str | None, size: int) -> None:
    unet = _unet(mid)
    latents, text = _inputs(2, cfg=True, size=size)
    expected = _plain(unet, latents, text, 4, 5.0)
    got = _faster(unet, latents, text, 4, mode=1, noise=0.0)
    assert got.shape == latents.shape
    assert _rel(got, expected) < 1e-5


def test_without_guidance_is_the_plain_loop() -> None:
    unet = _unet()
    latents, text = _inputs(2, cfg=False)
    expected = _plain(unet, latents, text, 3, 1.0)
    got = _faster(unet, latents, text, 3, mode=1, noise=0.0, guidance_scale=1.0)
    assert _rel(got, expected) < 1e-5
    with pytest.raises(ValueError, match="rows"):
        _faster(unet, latents, text, 3, guidance_scale=5.0)


@pytest.mark.parametrize("cfg", [True, False])
def test_batched_decoder_equals_per_step_decoder(cfg: bool) -> None:
    unet = _unet()
    latents, text = _inputs(2, cfg=cfg, size=7)
    scale = 5.0 if cfg else 1.0
    batched = _faster(unet, latents, text, 8, mode=3, guidance_scale=scale)
    single = _faster(unet, latents, text, 8, mode=3, guidance_scale=scale, batched=False)
    assert _rel(batched, single) < 1e-5
    # Not vacuous: reusing the encoder features changes the result.
    assert _rel(batched, _plain(unet, latents, text, 8, scale, noise=0.003)) > 1e-3


def test_prior_noise_only_below_timestep_500() -> None:
    unet = _unet()
    latents, text = _inputs(1, cfg=True)
    # leading spacing, 8 steps: timesteps 875, 750, 625, 500, 375, 250, 125, 0.
    with_noise = _faster(unet, latents, text, 8, mode=3)
    without = _faster(unet, latents, text, 8, mode=3, noise=0.0)
    assert _rel(with_noise, without) > 1e-4
    # Every step a key step: the plain loop with the noise added strictly below t = 500,
    # after the U-Net call and before the scheduler step; not at t = 500, not before the U-Net.
    got = _faster(unet, latents, text, 8, mode=1)
    assert _rel(got, _plain(unet, latents, text, 8, 5.0, noise=0.003)) < 1e-6
    assert _rel(got, _plain(unet, latents, text, 8, 5.0, noise=0.003, threshold=501)) > 1e-4
    # Small (the U-Net sees latents 0.003 * init apart) but well above rounding (~1e-5 here).
    before = _plain(unet, latents, text, 8, 5.0, noise=0.003, noise_before_unet=True)
    assert _rel(got, before) > 3e-6
    # trailing spacing: 1 step is t = 999 (no noise), 2 steps end at t = 499 (noise).
    for steps, differs in ((1, False), (2, True)):
        a = _faster(unet, latents, text, steps, mode=3, spacing="trailing")
        b = _faster(unet, latents, text, steps, mode=3, spacing="trailing", noise=0.0)
        assert torch.equal(a, b) != differs


@pytest.mark.parametrize("batched", [True, False])
def test_encoder_runs_on_key_steps_only(batched: bool) -> None:
    unet = _unet()
    latents, text = _inputs(2, cfg=True)
    down: list[tuple[int, torch.Tensor]] = []
    up: list[int] = []

    def on_down(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        down.append((kwargs["hidden_states"].shape[0], kwargs["temb"].clone()))

    def on_up(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        up.append(kwargs["hidden_states"].shape[0])

    hooks = [
        unet.down_blocks[1].register_forward_pre_hook(on_down, with_kwargs=True),
        unet.up_blocks[0].register_forward_pre_hook(on_up, with_kwargs=True),
    ]
    try:
        _faster(unet, latents, text, 8, mode=3, batched=batched)
    finally:
        for hook in hooks:
            hook.remove()
    # 8 steps, key steps 0, 3, 6: timesteps 875, 500, 125 (leading spacing).
    assert [rows for rows, _ in down] == [4, 4, 4]
    with torch.no_grad():
        for (_, temb), t in zip(down, (875, 500, 125), strict=True):
            t_emb = unet.time_proj(torch.full((4,), t))
            assert torch.allclose(temb, unet.time_embedding(t_emb), rtol=0, atol=1e-6)
    # The decoder: once per group over its steps, or once per step.
    assert up == ([12, 12, 8] if batched else [4] * 8)
