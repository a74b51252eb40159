"""CLEAR's attention processors and token-grid hooks, used by :mod:`difforge.patches.clear`.

The processors compute the local attention (pooled keys, proportional scale, the custom op
``torch.ops.difforge.local_attention_2d``); the hooks publish the current forward call's
token grid (H, W) to them, from DiT's latent shape or from FLUX's ``clear_grid`` kwarg or
``img_ids``, and forget it when the transformer's forward ends.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from difforge.errors import DifforgeError

__all__ = ["GRID_KWARG", "ClearAttnProcessor", "ClearFluxAttnProcessor", "local_attention_op"]


GRID_KWARG = "clear_grid"

# The authors' training length: 64 x 64 image tokens + 512 text tokens.
_TRAIN_SEQ_LEN = 64**2 + 512


def local_attention_op() -> Any:
    """``torch.ops.difforge.local_attention_2d``, registering it on first use."""
    from difforge.plugins import load_ops

    load_ops()
    return torch.ops.difforge.local_attention_2d


class _Grid:
    """The token grid of the current forward call, shared by all patched attentions."""

    def __init__(self) -> None:
        self.size: tuple[Any, Any] | None = None

    def get(self) -> tuple[Any, Any]:
        if self.size is None:
            raise DifforgeError(
                "clear: attention called outside its transformer's forward (grid size unknown)"
            )
        return self.size


class _ClearCore(torch.nn.Module):
    """Shared part of the processors: pooling, scale and the op call on (B, heads, S, d)."""

    def __init__(
        self, grid: _Grid, radius: int, down: int, proportional: bool, dtype: torch.dtype
    ) -> None:
        super().__init__()
        self.grid = grid
        self.radius = radius
        self.down = down
        self.proportional = proportional
        if down > 1:
            # The authors' shape: broadcasts over (B, heads, H/f, f, W/f, f, d).
            self.spatial_weight = torch.nn.Parameter(
                torch.full((1, 1, 1, down, 1, down, 1), 1.0 / (down * down), dtype=dtype)
            )

    def attend(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, num_global: Any
    ) -> torch.Tensor:
        height, width = self.grid.get()
        head_dim = query.shape[-1]
        if self.proportional:
            # sqrt(log_4608(n)/d) = sqrt(log(n)/log(4608)) * 1/sqrt(d): the first factor goes
            # on q as a tensor so that a symbolic n survives export.
            n = key.shape[2] * (10 if self.down > 1 else 1)
            wide = torch.float64 if query.dtype == torch.float64 else torch.float32
            n_t = torch.full((), n, dtype=wide, device=query.device)
            factor = torch.sqrt(torch.log(n_t) / math.log(_TRAIN_SEQ_LEN))
            query = query * factor.to(query.dtype)
        num_pooled: Any = 0
        if self.down > 1:
            f = self.down
            if isinstance(height, int) and isinstance(width, int) and (height % f or width % f):
                raise DifforgeError(
                    f"clear: the token grid {height}x{width} is not divisible by down={f}"
                )
            image = slice(num_global, num_global + height * width)
            pooled_shape = (height // f, f, width // f, f)
            k_pool = (key[:, :, image].unflatten(2, pooled_shape) * self.spatial_weight).sum(
                dim=(3, 5)
            )
            v_pool = (value[:, :, image].unflatten(2, pooled_shape) * self.spatial_weight).sum(
                dim=(3, 5)
            )
            key = torch.cat([key, k_pool.flatten(2, 3)], dim=2)
            value = torch.cat([value, v_pool.flatten(2, 3)], dim=2)
            num_pooled = (height // f) * (width // f)
        op = local_attention_op()
        return op(
            query,
            key,
            value,
            height,
            width,
            num_global,
            self.radius,
            "disc",
            1.0 / math.sqrt(head_dim),
            num_pooled,
        )


class ClearAttnProcessor(_ClearCore):
    """CLEAR for a diffusers ``Attention`` used as image self-attention (DiT ``attn1``)."""

    def forward(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None:
            raise DifforgeError("clear: patched attention received encoder_hidden_states")
        residual = hidden_states
        batch = hidden_states.shape[0]
        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = self.attend(query, key, value, 0)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class ClearFluxAttnProcessor(_ClearCore):
    """CLEAR for ``FluxAttention``, double- and single-stream, mirroring FluxAttnProcessor."""

    def forward(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: Any = None,
    ) -> Any:
        from diffusers.models.embeddings import apply_rotary_emb
        from diffusers.models.transformers.transformer_flux import _get_qkv_projections

        query, key, value, enc_q, enc_k, enc_v = _get_qkv_projections(
            attn, hidden_states, encoder_hidden_states
        )
        query = attn.norm_q(query.unflatten(-1, (-1, attn.head_dim)))
        key = attn.norm_k(key.unflatten(-1, (-1, attn.head_dim)))
        value = value.unflatten(-1, (-1, attn.head_dim))
        if attn.added_kv_proj_dim is not None and encoder_hidden_states is not None:
            enc_q = attn.norm_added_q(enc_q.unflatten(-1, (-1, attn.head_dim)))
            enc_k = attn.norm_added_k(enc_k.unflatten(-1, (-1, attn.head_dim)))
            enc_v = enc_v.unflatten(-1, (-1, attn.head_dim))
            query = torch.cat([enc_q, query], dim=1)
            key = torch.cat([enc_k, key], dim=1)
            value = torch.cat([enc_v, value], dim=1)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        height, width = self.grid.get()
        # Single-stream blocks carry [text | image] in hidden_states already.
        num_global = query.shape[1] - height * width
        out = self.attend(
            query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), num_global
        )
        out = out.transpose(1, 2).flatten(2, 3).to(query.dtype)
        if encoder_hidden_states is not None:
            text_len = encoder_hidden_states.shape[1]
            enc_out, out = out[:, :text_len], out[:, text_len:]
            out = attn.to_out[1](attn.to_out[0](out.contiguous()))
            enc_out = attn.to_add_out(enc_out.contiguous())
            return out, enc_out
        return out


def _is_tracing() -> bool:
    return bool(torch.compiler.is_exporting() or torch.compiler.is_compiling())


def _grid_from_ids(img_ids: torch.Tensor, num_tokens: int) -> tuple[int, int]:
    ids = img_ids[0] if img_ids.dim() == 3 else img_ids
    height = int(ids[:, 1].max().item()) + 1
    width = int(ids[:, 2].max().item()) + 1
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    if (
        height * width != num_tokens
        or not torch.equal(ids[:, 1].round().long().cpu(), rows)
        or not torch.equal(ids[:, 2].round().long().cpu(), cols)
    ):
        raise DifforgeError(
            "clear: img_ids are not a row-major grid; pass "
            f"joint_attention_kwargs={{'{GRID_KWARG}': (h, w)}}"
        )
    return height, width


def _flux_grid_hook(grid: _Grid) -> Any:
    def hook(
        module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        extra = kwargs.get("joint_attention_kwargs")
        if isinstance(extra, dict) and GRID_KWARG in extra:
            # Popped so that the attention processors never see (and warn about) it.
            extra = dict(extra)
            height, width = extra.pop(GRID_KWARG)
            kwargs = {**kwargs, "joint_attention_kwargs": extra}
            grid.size = (height, width)
            return args, kwargs
        if _is_tracing():
            raise DifforgeError(
                "clear on FluxTransformer2DModel: while exporting, pass the token grid as "
                f"joint_attention_kwargs={{'{GRID_KWARG}': (h, w)}} (h, w from the latent's shape)"
            )
        hidden = args[0] if args else kwargs["hidden_states"]
        img_ids = kwargs.get("img_ids", args[4] if len(args) > 4 else None)
        if img_ids is None:
            raise DifforgeError("clear: FluxTransformer2DModel called without img_ids")
        grid.size = _grid_from_ids(img_ids, hidden.shape[1])
        return args, kwargs

    return hook


def _dit_grid_hook(grid: _Grid, patch_size: int) -> Any:
    def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        grid.size = (hidden.shape[-2] // patch_size, hidden.shape[-1] // patch_size)

    return hook


def _clear_grid(grid: _Grid) -> Any:
    def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
        grid.size = None

    return hook
