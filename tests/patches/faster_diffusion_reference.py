"""Independent reference of Faster Diffusion for a diffusers ``UNet2DConditionModel``.

Reproduces, by the same mechanism, the sampling loop ``register_parallel_pipeline`` and the
U-Net forward ``register_faster_forward`` of ``utils_sd.py`` in the authors' repository
(github.com/hutaiHang/Faster-Diffusion; Li et al., "Faster Diffusion: Rethinking the Role of
UNet Encoder in Diffusion Models"):

- key steps: mode ``"50ls"`` makes the step indices ``0, 1, 2, 3, 5, 10, 15, 25, 35`` key
  steps, an integer mode ``m`` every index ``i`` with ``i % m == 0``;
- the steps are taken in groups: a key step and the non-key steps that follow it. Each group
  is one U-Net call: ``conv_in``, the down blocks and the mid block run once, on the latents
  at the key step, with the key step's time embedding; then the up blocks and
  ``conv_norm_out``/``conv_act``/``conv_out`` run batched over the group's steps, the mid
  output, the skip tuple and the text embeddings repeated per step (each half of the
  classifier-free-guidance batch repeated step-major, uncond half first, as the authors'
  ``warpped_feature``/``warpped_skip_feature``/``warpped_text_emb``) and each step given its
  own time embedding (``warpped_timestep``);
- classifier-free guidance, then, for each step of the group in order, the prior noise
  ``if t / 1000 < 0.5: latents = latents + 0.003 * init_latents`` (``init_latents`` = the
  initial latents) and ``scheduler.step(noise_of_that_step, t, latents)``;
- ``scheduler.scale_model_input`` is not called (the authors' parallel pipeline does not).

The forward here is written over the U-Net's submodules (``time_proj``, ``time_embedding``,
``conv_in``, ``down_blocks``, ``mid_block``, ``up_blocks``, ``conv_norm_out``, ``conv_act``,
``conv_out``); nothing is patched.

Differences from the authors, each deliberate:

- Only the loop's modes are accepted (``"50ls"`` and integers >= 1); the authors' U-Net
  forward also knows ``"pro"``, ``"50ls2"``... but their pipeline refuses them.
- Without guidance (``guidance_scale <= 1``) the batch is not split into halves: the latents
  features are repeated step-major as one block. The authors' ``warpped_*`` helpers always
  ``chunk(2)``, which fails for a batch of one and mixes the steps' rows for an even batch.
- A mid block without cross-attention (``UNetMidBlock2D``) is called ``mid_block(h, emb)``
  as diffusers does (the authors always pass ``encoder_hidden_states``, which it does not
  take); ``mid_block = None`` is accepted, as by the authors.
- U-Nets with a class embedding, an addition embedding, ``time_embed_act``,
  ``encoder_hid_proj`` or ``time_cond_proj_dim`` are refused: the authors' recomputed
  per-step time embedding drops all of those, and an SD-1.x U-Net has none of them.
- No ControlNet residuals, attention masks, ``cross_attention_kwargs`` or
  ``guidance_rescale`` (the authors accept and, at 0, skip the last); the scheduler's
  ``step`` gets no extra kwargs (``eta = 0``, no generator).
- ``batched=False`` runs the decoder once per step of a group instead of once per group
  (same arithmetic; for testing the batched layout).
- ``noise`` replaces the authors' constant ``0.003``, so that 0 disables the prior noise.
- The skip features are kept as they are (the authors ``deepcopy`` them into attributes of
  the U-Net, which changes nothing inside one call).
"""

from __future__ import annotations

import itertools
from typing import Any

import diffusers
import torch

# The authors' "50ls" key steps (``register_parallel_pipeline`` and ``register_faster_forward``).
KEY_STEPS_50LS: tuple[int, ...] = (0, 1, 2, 3, 5, 10, 15, 25, 35)


def key_steps(mode: str | int, num_steps: int) -> list[int]:
    """The key step indices below ``num_steps`` for ``mode`` (``"50ls"`` or an integer)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if isinstance(mode, str):
        if mode != "50ls":
            raise ValueError(f"unsupported Faster Diffusion mode {mode!r} (use '50ls' or an int)")
        return [i for i in KEY_STEPS_50LS if i < num_steps]
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise TypeError(f"mode must be '50ls' or an int, got {mode!r}")
    if mode < 1:
        raise ValueError(f"an integer mode must be >= 1, got {mode}")
    return list(range(0, num_steps, mode))


def step_groups(mode: str | int, num_steps: int) -> list[list[int]]:
    """The authors' ``time_ls`` as step indices: each key step and the non-key steps after it."""
    keys = key_steps(mode, num_steps)
    bounds = [*keys, num_steps]
    return [list(range(start, end)) for start, end in itertools.pairwise(bounds)]


def _check_unet(unet: Any) -> None:
    config = unet.config
    unsupported = {
        "class_embedding": getattr(unet, "class_embedding", None) is not None,
        "add_embedding": getattr(unet, "add_embedding", None) is not None,
        "time_embed_act": getattr(unet, "time_embed_act", None) is not None,
        "encoder_hid_proj": getattr(unet, "encoder_hid_proj", None) is not None,
        "time_cond_proj_dim": config.get("time_cond_proj_dim") is not None,
    }
    found = [name for name, present in unsupported.items() if present]
    if found:
        raise ValueError(f"the Faster Diffusion reference does not support a U-Net with {found}")


def _time_embedding(unet: Any, timesteps: torch.Tensor) -> torch.Tensor:
    """``time_embedding(time_proj(t))`` for a 1-D tensor of timesteps (one per batch row)."""
    t_emb = unet.time_proj(timesteps).to(dtype=unet.dtype)
    return unet.time_embedding(t_emb)


def _encode(
    unet: Any, sample: torch.Tensor, emb: torch.Tensor, text: torch.Tensor
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """conv_in, down blocks and mid block: the mid output and the skip tuple."""
    if unet.config.center_input_sample:
        sample = 2 * sample - 1.0
    h = unet.conv_in(sample)
    skips: tuple[torch.Tensor, ...] = (h,)
    for block in unet.down_blocks:
        if getattr(block, "has_cross_attention", False):
            h, res = block(hidden_states=h, temb=emb, encoder_hidden_states=text)
        else:
            h, res = block(hidden_states=h, temb=emb)
        skips += tuple(res)
    mid = unet.mid_block
    if mid is not None:
        if getattr(mid, "has_cross_attention", False):
            h = mid(h, emb, encoder_hidden_states=text)
        else:
            h = mid(h, emb)
    return h, skips


def _decode(
    unet: Any,
    h: torch.Tensor,
    skips: tuple[torch.Tensor, ...],
    emb: torch.Tensor,
    text: torch.Tensor,
    forward_upsample_size: bool,
) -> torch.Tensor:
    """Up blocks and the output convolution, as diffusers runs them."""
    upsample_size = None
    num_blocks = len(unet.up_blocks)
    for i, block in enumerate(unet.up_blocks):
        n = len(block.resnets)
        res, skips = skips[-n:], skips[:-n]
        if i < num_blocks - 1 and forward_upsample_size:
            upsample_size = skips[-1].shape[2:]
        if getattr(block, "has_cross_attention", False):
            h = block(
                hidden_states=h,
                temb=emb,
                res_hidden_states_tuple=res,
                encoder_hidden_states=text,
                upsample_size=upsample_size,
            )
        else:
            h = block(
                hidden_states=h, temb=emb, res_hidden_states_tuple=res, upsample_size=upsample_size
            )
    if unet.conv_norm_out is not None:
        h = unet.conv_act(unet.conv_norm_out(h))
    return unet.conv_out(h)


def _repeat_steps(x: torch.Tensor, steps: int, halves: int) -> torch.Tensor:
    """The authors' ``warpped_feature``: each half repeated ``steps`` times, step-major."""
    reps = (steps,) + (1,) * (x.dim() - 1)
    return torch.cat([half.repeat(*reps) for half in x.chunk(halves)])


def _guide(out: torch.Tensor, guidance_scale: float, cfg: bool) -> torch.Tensor:
    if not cfg:
        return out
    uncond, cond = out.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


@torch.no_grad()
def faster_diffusion_latents(
    unet: diffusers.UNet2DConditionModel,
    scheduler: diffusers.DDIMScheduler,
    latents: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    num_steps: int,
    guidance_scale: float,
    mode: str | int = "50ls",
    noise: float = 0.003,
    batched: bool = True,
) -> torch.Tensor:
    """Sample with Faster Diffusion from ``latents``; returns the final latents.

    ``encoder_hidden_states`` is ``cat([uncond, cond])`` (``2B`` rows) when
    ``guidance_scale > 1``, else ``B`` rows. ``scheduler`` is configured by the caller;
    ``set_timesteps(num_steps)`` is called here.
    """
    net: Any = unet  # diffusers' module attributes are untyped
    _check_unet(net)
    cfg = guidance_scale > 1.0
    halves = 2 if cfg else 1
    batch = latents.shape[0]
    if encoder_hidden_states.shape[0] != halves * batch:
        raise ValueError(
            f"encoder_hidden_states has {encoder_hidden_states.shape[0]} rows, expected "
            f"{halves * batch} for {batch} latents (guidance_scale={guidance_scale})"
        )
    up_factor = 2 ** int(net.num_upsamplers)
    forward_upsample_size = any(s % up_factor != 0 for s in latents.shape[-2:])

    scheduler.set_timesteps(num_steps, device=latents.device)
    timesteps = scheduler.timesteps
    init_latents = latents.clone()
    text = encoder_hidden_states
    for group in step_groups(mode, len(timesteps)):
        ts = [timesteps[i] for i in group]
        n = len(ts)
        model_input = torch.cat([latents] * halves)
        rows = model_input.shape[0]
        key_emb = _time_embedding(net, ts[0].reshape(1).to(latents.device).expand(rows))
        h, skips = _encode(net, model_input, key_emb, text)
        if batched:
            # Rows: [half 0: step 0 (B), step 1 (B), ...][half 1: step 0 (B), ...]
            t_rows = torch.cat([t.reshape(1).expand(batch) for t in ts]).repeat(halves)
            emb = _time_embedding(net, t_rows.to(latents.device))
            out = _decode(
                net,
                _repeat_steps(h, n, halves),
                tuple(_repeat_steps(s, n, halves) for s in skips),
                emb,
                _repeat_steps(text, n, halves),
                forward_upsample_size,
            )
            guided = _guide(out, guidance_scale, cfg)
            step_noise = list(guided.split(batch))
        else:
            step_noise = []
            for t in ts:
                emb = _time_embedding(net, t.reshape(1).to(latents.device).expand(rows))
                out = _decode(net, h, skips, emb, text, forward_upsample_size)
                step_noise.append(_guide(out, guidance_scale, cfg))
        for t, eps in zip(ts, step_noise, strict=True):
            if noise != 0 and float(t) / 1000 < 0.5:
                latents = latents + noise * init_latents
            latents = scheduler.step(eps, t, latents, return_dict=False)[0]
    return latents
