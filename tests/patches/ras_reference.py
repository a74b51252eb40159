"""Independent dense reference of RAS (region-adaptive sampling) for DiT and FLUX transformers.

Reproduces the authors' method (github.com/microsoft/RAS: ``utils/ras_manager.py``, the RAS
flow-matching scheduler, ``modules/attention_processor.py`` and the transformer forwards) on a
diffusers ``DiTTransformer2DModel`` or ``FluxTransformer2DModel``, without gather/scatter:
every token runs through every layer on every step, and two masks make the result equal to
the authors' sparse computation:

- in every self-attention (DiT: each block's ``attn1``; FLUX: every double- and single-stream
  attention, image tokens only) the K/V rows of the cached image tokens are taken from a
  per-layer cache. The cache holds K *after* the QK-norm and, for FLUX, after RoPE (the
  authors cache K after ``norm_k``; both are per-token, so this is equivalent). A dense step
  stores the full K/V; a RAS step overwrites the rows of its active tokens.
- the model output at the cached tokens is replaced by the previous step's (filled) output.

Choices where the authors' code is ambiguous or B = 1 only: selection is per image (the
authors share one selection over the batch); ``high_bar = 0`` caches no high-score tokens (the
authors' ``indices[-0:]`` would be all of them); the sort is stable (ties keep the lower token
index first); ``scheduler_end_step`` is ignored; no selection after the last step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DiTTransformer2DModel, FluxTransformer2DModel
from diffusers.models.embeddings import apply_rotary_emb


@dataclass
class _State:
    """Read by the processors on each call."""

    active: torch.Tensor | None = None  # [B, T] bool (True: recomputed); None on a dense step
    n_image: int = 0  # image tokens: the last n_image rows of every self-attention sequence


class _KVCache:
    """Per-layer K/V of the image tokens, mixed into the fresh K/V by the active mask."""

    def __init__(self, state: _State) -> None:
        self.state = state
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def mix(self, k: torch.Tensor, v: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        active = self.state.active
        if active is not None:
            if self.k is None or self.v is None:
                raise RuntimeError("RAS step before any dense step")
            shape = [1] * k.ndim
            shape[0], shape[dim] = active.shape
            mask = active.view(shape)
            k, v = torch.where(mask, k, self.k), torch.where(mask, v, self.v)
        self.k, self.v = k, v
        return k, v


class _DiTProcessor(_KVCache):
    """``AttnProcessor2_0`` for DiT's self-attention ``attn1`` (no mask, norms or residual)."""

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise NotImplementedError("DiT attn1 is unmasked self-attention")
        if attn.spatial_norm is not None or attn.group_norm is not None or attn.residual_connection:
            raise NotImplementedError("unexpected Attention configuration")
        b = hidden_states.shape[0]
        q, k, v = (
            f(hidden_states).unflatten(-1, (attn.heads, -1)).transpose(1, 2)
            for f in (attn.to_q, attn.to_k, attn.to_v)
        )
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        k, v = self.mix(k, v, dim=2)  # [B, heads, T, head_dim]
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(b, -1, out.shape[1] * out.shape[3]).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        return out / attn.rescale_output_factor


class _FluxProcessor(_KVCache):
    """``FluxAttnProcessor`` (double- and single-stream) with the image K/V rows mixed."""

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: Any = None,
    ) -> Any:
        if attention_mask is not None or attn.fused_projections:
            raise NotImplementedError("attention masks and fused projections are not supported")

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.unflatten(-1, (-1, attn.head_dim))  # [B, S, heads, head_dim]

        q = attn.norm_q(heads(attn.to_q(hidden_states)))
        k = attn.norm_k(heads(attn.to_k(hidden_states)))
        v = heads(attn.to_v(hidden_states))
        n_text = 0
        if encoder_hidden_states is not None:
            n_text = encoder_hidden_states.shape[1]
            eq = attn.norm_added_q(heads(attn.add_q_proj(encoder_hidden_states)))
            ek = attn.norm_added_k(heads(attn.add_k_proj(encoder_hidden_states)))
            ev = heads(attn.add_v_proj(encoder_hidden_states))
            q, k, v = torch.cat([eq, q], 1), torch.cat([ek, k], 1), torch.cat([ev, v], 1)
        if image_rotary_emb is not None:
            q = apply_rotary_emb(q, image_rotary_emb, sequence_dim=1)
            k = apply_rotary_emb(k, image_rotary_emb, sequence_dim=1)
        s = k.shape[1] - self.state.n_image  # text rows first, then the image rows
        k_img, v_img = self.mix(k[:, s:], v[:, s:], dim=1)
        k, v = torch.cat([k[:, :s], k_img], 1), torch.cat([v[:, :s], v_img], 1)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2, 3).to(q.dtype)
        if encoder_hidden_states is None:
            return out
        text, image = out.split_with_sizes([n_text, out.shape[1] - n_text], dim=1)
        image = attn.to_out[1](attn.to_out[0](image.contiguous()))
        return image, attn.to_add_out(text.contiguous())


@contextmanager
def _installed(transformer: torch.nn.Module, state: _State) -> Iterator[None]:
    """Install a fresh RAS processor on every self-attention; restore the originals after."""
    flux = isinstance(transformer, FluxTransformer2DModel)
    suffix, cls = (".attn", _FluxProcessor) if flux else (".attn1", _DiTProcessor)
    layers = [m for n, m in transformer.named_modules() if n.endswith(suffix)]
    originals = [m.processor for m in layers]
    try:
        for m in layers:
            m.set_processor(cls(state))
        yield
    finally:
        for m, p in zip(layers, originals, strict=True):
            m.set_processor(p)


def _model(
    transformer: torch.nn.Module, cond: dict[str, torch.Tensor]
) -> tuple[Callable[[torch.Tensor, float], torch.Tensor], int]:
    """The velocity ``v(x, sigma)`` as the brief calls the model, and the token patch size."""
    if isinstance(transformer, DiTTransformer2DModel):

        def dit(x: torch.Tensor, sigma: float) -> torch.Tensor:
            t = torch.full((x.shape[0],), sigma * 1000.0, dtype=torch.float32, device=x.device)
            out = transformer(x, timestep=t, class_labels=cond["class_labels"], return_dict=False)
            return out[0][:, : x.shape[1]]

        return dit, int(transformer.config.patch_size)
    if isinstance(transformer, FluxTransformer2DModel):

        def flux(x: torch.Tensor, sigma: float) -> torch.Tensor:
            b, c, hh, ww = x.shape
            h, w = hh // 2, ww // 2
            packed = x.reshape(b, c, h, 2, w, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, h * w, c * 4)
            rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            img_ids = torch.stack([torch.zeros_like(rows), rows, cols], -1).reshape(-1, 3).float()
            text = cond["encoder_hidden_states"]
            out = transformer(
                hidden_states=packed,
                encoder_hidden_states=text,
                pooled_projections=cond["pooled_projections"],
                timestep=torch.full((b,), sigma, dtype=torch.float32, device=x.device),
                img_ids=img_ids.to(x.device),
                txt_ids=torch.zeros(text.shape[1], 3, device=x.device),
                guidance=None,
                return_dict=False,
            )[0]
            return out.reshape(b, h, w, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, hh, ww)

        return flux, 2
    raise TypeError(f"unsupported transformer {type(transformer).__name__}")


def select_active(
    delta: torch.Tensor,
    drop_cnt: torch.Tensor,
    p: int,
    skip: int,
    starvation: float,
    high_ratio: float,
    metric: str,
) -> torch.Tensor:
    """One image's RAS selection from ``delta`` [C, H, W]; returns the active mask [T].

    Updates ``drop_cnt`` [T] in place (``+= 1`` at the cached tokens).
    """
    if metric == "std":
        per_pixel = torch.std(delta, dim=0)
    elif metric == "l2norm":
        per_pixel = torch.norm(delta, p=2, dim=0)
    else:
        raise ValueError(f"unknown metric {metric!r}")
    h, w = per_pixel.shape
    score = per_pixel.view(h // p, p, w // p, p).transpose(1, 2).mean(-1).mean(-1).reshape(-1)
    score = score * torch.exp(starvation * drop_cnt)
    indices = torch.sort(score, stable=True).indices
    low_bar, high_bar = int(skip * (1 - high_ratio)), int(skip * high_ratio)
    cached = torch.cat([indices[:low_bar], indices[indices.numel() - high_bar :]])
    drop_cnt[cached] += 1
    active = torch.ones_like(score, dtype=torch.bool)
    active[cached] = False
    return active


@dataclass
class RasStep:
    """One sampler step: ``x_next = x + (sigmas[i+1] - sigmas[i]) * v``."""

    index: int
    x: torch.Tensor  # the step's input latents [B, C, H, W]
    raw: torch.Tensor  # the model output [B, C, H, W]
    v: torch.Tensor  # the output after the fill of the cached tokens
    active: torch.Tensor | None  # [B, T] recomputed tokens on a RAS step; None on a dense step
    x_next: torch.Tensor


@torch.no_grad()
def ras_steps(
    transformer: torch.nn.Module,
    latents: torch.Tensor,
    sigmas: Sequence[float],
    cond: dict[str, torch.Tensor],
    ratio: float,
    start: int,
    resets: Sequence[int] = (),
    starvation: float = 0.1,
    high_ratio: float = 1.0,
    metric: str = "std",
) -> Iterator[RasStep]:
    """The RAS sampling loop of :func:`ras_reference`, one :class:`RasStep` per step."""
    if not 0.0 < ratio <= 1.0 or start < 1 or not 0.0 <= high_ratio <= 1.0:
        raise ValueError("need 0 < ratio <= 1, start >= 1 and 0 <= high_ratio <= 1")
    model, p = _model(transformer, cond)
    b, _, hh, ww = latents.shape
    if hh % p or ww % p:
        raise ValueError(f"latents {hh}x{ww} are not a multiple of the patch size {p}")
    n = len(sigmas) - 1
    tokens = (hh // p) * (ww // p)
    ras = [i >= start and i not in resets for i in range(n)] + [False]
    skip = int((1 - ratio) * tokens)
    drop_cnt = torch.full((b, tokens), -float(n + 1), device=latents.device)
    state = _State(n_image=tokens)
    x, prev_v, active = latents, latents, None
    with _installed(transformer, state):
        for i in range(n):
            state.active = active if ras[i] else None
            raw = model(x, float(sigmas[i]))
            v = raw
            if state.active is not None:
                pixels = state.active.view(b, 1, hh // p, 1, ww // p, 1)
                pixels = pixels.expand(b, 1, hh // p, p, ww // p, p).reshape(b, 1, hh, ww)
                v = torch.where(pixels, raw, prev_v)
            ds = float(sigmas[i + 1]) - float(sigmas[i])
            x_next = x + ds * v
            if ras[i + 1]:
                d = ds * v
                args = (p, skip, starvation, high_ratio, metric)
                active = torch.stack([select_active(d[j], drop_cnt[j], *args) for j in range(b)])
            yield RasStep(i, x, raw, v, state.active, x_next)
            x, prev_v = x_next, v


def ras_reference(
    transformer: torch.nn.Module,
    latents: torch.Tensor,
    sigmas: Sequence[float],
    cond: dict[str, torch.Tensor],
    ratio: float,
    start: int,
    resets: Sequence[int] = (),
    starvation: float = 0.1,
    high_ratio: float = 1.0,
    metric: str = "std",
) -> torch.Tensor:
    """RAS sampling from ``latents`` (Euler over ``sigmas``); returns the final latents."""
    x = latents
    for step in ras_steps(
        transformer, latents, sigmas, cond, ratio, start, resets, starvation, high_ratio, metric
    ):
        x = step.x_next
    return x
