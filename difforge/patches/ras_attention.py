"""RAS's attention processors and the per-forward state they share, for :mod:`difforge.patches.ras`.

On a RAS step the transformer runs on the active image tokens only (gathered after the patch
embedding). Every self-attention computes fresh K/V for them, writes them into the layer's
K/V cache (one row per image token, kept between steps) and lets its queries attend to the
whole cache: the authors' ``k_cache[:, other_patchified_index] = key`` followed by attention
over ``k_cache`` (``modules/attention_processor.py``). On a dense step the fresh K/V of every
token become the cache. Text tokens (FLUX) are always computed and never cached.

The cache holds keys after the QK norm and RoPE (the authors keep them before and apply both
to the whole cache each step; both are per token, so the numbers are the same and this does
less work). Gather and scatter are ``torch.gather``/``Tensor.scatter`` on the token axis, which
export as ONNX GatherElements/ScatterElements with one index row per image.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from difforge.errors import DifforgeError

__all__ = ["RasAttnProcessor", "RasFluxAttnProcessor", "RasForward", "gather_rows", "scatter_rows"]


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[b, index[b]]`` for x [B, N, D] and index [B, n]."""
    return torch.gather(x, 1, index[:, :, None].expand(-1, -1, x.shape[-1]))


def scatter_rows(base: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``base`` with ``base[b, index[b]] = rows[b]`` (a new tensor)."""
    return base.scatter(1, index[:, :, None].expand(-1, -1, base.shape[-1]), rows)


class RasForward:
    """One forward call's RAS state: the active tokens (None on a dense step), the K/V caches
    it reads (token rows [B, N, D] per layer) and what it writes, the text length (FLUX)."""

    def __init__(self) -> None:
        self.active: torch.Tensor | None = None
        self.caches: dict[str, torch.Tensor] = {}
        self.written: dict[str, torch.Tensor] = {}
        self.text_len = 0

    def attend_to(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[
        torch.Tensor, torch.Tensor
    ]:
        """Image keys/values [B, S, D] of this call -> those of every image token."""
        if self.active is not None:
            key = scatter_rows(self._cache(f"ras_k{layer}"), self.active, key)
            value = scatter_rows(self._cache(f"ras_v{layer}"), self.active, value)
        self.written[f"ras_k{layer}"], self.written[f"ras_v{layer}"] = key, value
        return key, value

    def _cache(self, name: str) -> torch.Tensor:
        if name not in self.caches:
            raise DifforgeError(f"ras: a RAS step ran without the K/V cache {name!r}")
        return self.caches[name]

    def image_rope(self, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE tables [S, d] of every image token -> [B or 1, S', d] of this call's."""
        if self.active is None:
            return cos[None], sin[None]
        batch = self.active.shape[0]
        return (
            gather_rows(cos[None].expand(batch, -1, -1), self.active),
            gather_rows(sin[None].expand(batch, -1, -1), self.active),
        )


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """diffusers' ``apply_rotary_emb`` (real, interleaved pairs) on x [B, S, H, d] with tables
    [B or 1, S, d], so that each image row may have its own positions."""
    real, imag = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)
    rotated = torch.stack([-imag, real], dim=-1).flatten(3)
    return (x.float() * cos[:, :, None] + rotated.float() * sin[:, :, None]).to(x.dtype)


class _RasProcessor:
    """A patched attention: the forward's shared state and its layer's cache number."""

    def __init__(self, state: RasForward, layer: int) -> None:
        self.state = state
        self.layer = layer


class RasAttnProcessor(_RasProcessor):
    """RAS for a diffusers ``Attention`` used as DiT's image self-attention (``attn1``),
    otherwise as ``AttnProcessor2_0`` computes it."""

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise DifforgeError("ras: patched self-attention got encoder states or a mask")
        residual = hidden_states
        batch = hidden_states.shape[0]
        key, value = self.state.attend_to(
            self.layer, attn.to_k(hidden_states), attn.to_v(hidden_states)
        )
        query = attn.to_q(hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class RasFluxAttnProcessor(_RasProcessor):
    """RAS for ``FluxAttention``, double- and single-stream, otherwise as diffusers'
    ``FluxAttnProcessor`` computes it."""

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: Any = None,
    ) -> Any:
        from diffusers.models.transformers.transformer_flux import _get_qkv_projections

        if attention_mask is not None or image_rotary_emb is None:
            raise DifforgeError("ras: FLUX attention needs its RoPE tables and takes no mask")
        query, key, value, enc_q, enc_k, enc_v = _get_qkv_projections(
            attn, hidden_states, encoder_hidden_states
        )
        query = attn.norm_q(query.unflatten(-1, (-1, attn.head_dim)))
        key = attn.norm_k(key.unflatten(-1, (-1, attn.head_dim)))
        value = value.unflatten(-1, (-1, attn.head_dim))
        text = self.state.text_len
        if encoder_hidden_states is not None:  # double-stream: the text comes separately
            text_q = attn.norm_added_q(enc_q.unflatten(-1, (-1, attn.head_dim)))
            text_k = attn.norm_added_k(enc_k.unflatten(-1, (-1, attn.head_dim)))
            text_v = enc_v.unflatten(-1, (-1, attn.head_dim))
        else:  # single-stream: [text | image] rows
            text_q, query = query[:, :text], query[:, text:]
            text_k, key = key[:, :text], key[:, text:]
            text_v, value = value[:, :text], value[:, text:]
        cos, sin = image_rotary_emb
        text_q = _rope(text_q, cos[None, :text], sin[None, :text])
        text_k = _rope(text_k, cos[None, :text], sin[None, :text])
        image_cos, image_sin = self.state.image_rope(cos[text:], sin[text:])
        query = _rope(query, image_cos, image_sin)
        key = _rope(key, image_cos, image_sin)
        full_k, full_v = self.state.attend_to(self.layer, key.flatten(2), value.flatten(2))
        query = torch.cat([text_q, query], dim=1)
        key = torch.cat([text_k, full_k.unflatten(-1, (-1, attn.head_dim))], dim=1)
        value = torch.cat([text_v, full_v.unflatten(-1, (-1, attn.head_dim))], dim=1)
        out = F.scaled_dot_product_attention(
            query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
        )
        out = out.transpose(1, 2).flatten(2, 3).to(query.dtype)
        if encoder_hidden_states is None:
            return out
        text_out, out = out[:, :text], out[:, text:]
        out = attn.to_out[1](attn.to_out[0](out.contiguous()))
        return out, attn.to_add_out(text_out.contiguous())
