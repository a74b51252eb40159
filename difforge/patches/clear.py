"""CLEAR: convolution-like local attention for diffusion transformers.

Reproduces ``LocalFlexAttnProcessor`` / ``LocalDownsampleFlexAttnProcessor`` of
Huage001/CLEAR on diffusers' DiT and FLUX transformers, computing attention with the
custom op ``torch.ops.difforge.local_attention_2d`` (registered by
:mod:`difforge.plugins.ops`):

* an image query sees the image keys at Euclidean distance < ``radius`` (strict, cut at the
  border, never shifted) plus every global (text) key; a text query sees every key;
* ``down`` = f > 1 appends pooled keys/values, ``sum over each f x f cell of key * w`` with a
  learnable ``spatial_weight`` w (initialised 1/f^2, i.e. average pooling), computed after
  RoPE; image queries see all of them, text queries none;
* ``proportional`` scales logits by sqrt(log_4608(n) / d) (n = text + image tokens; the
  down variant uses log(10 n)), as the authors' high-resolution notebook does.

Token layout is ``[text | image (row-major) | pooled]``. The authors pool from key index 512
(their fixed T5 length); here pooling starts after the actual number of text tokens, which
is the same for T = 512.

The attention needs the token grid (H, W). For DiT it is read from the latent's shape by a
forward pre-hook on the patch embedding (symbolic under dynamic-shape export). A FLUX
transformer sees packed tokens, so the grid comes from
``joint_attention_kwargs={"clear_grid": (h, w)}`` (ints, or SymInts from an exporting
wrapper's unpacked-latent shape); in eager mode without it, it is read from ``img_ids``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, cast

import torch

from difforge.errors import DifforgeError
from difforge.patches import register_patch
from difforge.patches.base import Patch, PatchOption, PatchReport
from difforge.patches.clear_attention import (
    GRID_KWARG,
    ClearAttnProcessor,
    ClearFluxAttnProcessor,
    _clear_grid,
    _dit_grid_hook,
    _flux_grid_hook,
    _Grid,
)

__all__ = ["GRID_KWARG", "ClearAttnProcessor", "ClearFluxAttnProcessor", "ClearPatch"]


def _restore(target: torch.Tensor, saved: torch.Tensor) -> None:
    with torch.no_grad():
        target.copy_(saved)


@register_patch
class ClearPatch(Patch):
    """CLEAR local attention on every image self-attention of a DiT or FLUX transformer."""

    name = "clear"
    summary = "CLEAR circular local attention (+ optional pooled keys) for DiT / FLUX"
    main_option = "weights"
    targets = ("DiTTransformer2DModel", "FluxTransformer2DModel")
    #: whether the applied model is a FLUX transformer (it then needs the grid passed in)
    _is_flux = False
    option_specs = (
        PatchOption("radius", "int", 16, "disc radius in tokens (strict <)", minimum=1),
        PatchOption(
            "down",
            "int",
            1,
            "down-sampling factor f of the extra pooled keys/values; 1 = none",
            minimum=1,
        ),
        PatchOption(
            "proportional",
            "bool",
            False,
            "scale logits by sqrt(log_4608(n)/d) (the authors' high-resolution setting)",
        ),
        PatchOption(
            "weights",
            "path",
            None,
            "safetensors of fine-tuned to_q/to_k/to_v/to_out (+ processor.spatial_weight), "
            "keyed like the transformer's state dict",
        ),
    )

    def _apply(self, denoiser: torch.nn.Module) -> PatchReport:
        is_flux = any(c.__name__ == "FluxTransformer2DModel" for c in type(denoiser).__mro__)
        self._is_flux = is_flux
        self._on_undo(functools.partial(setattr, self, "_is_flux", False))
        attentions = self._targets(denoiser, is_flux)
        grid = _Grid()
        cls = ClearFluxAttnProcessor if is_flux else ClearAttnProcessor
        for attn in attentions.values():
            dtype = attn.to_q.weight.dtype
            processor = cls(
                grid,
                self.options["radius"],
                self.options["down"],
                self.options["proportional"],
                dtype,
            )
            processor.to(attn.to_q.weight.device)
            original = attn.processor
            attn.set_processor(processor)
            self._on_undo(functools.partial(attn.set_processor, original))
        if is_flux:
            pre = denoiser.register_forward_pre_hook(_flux_grid_hook(grid), with_kwargs=True)
        else:
            # On the patch embedding, not the model: an exporter may run DiT's blocks from
            # its own forward (diffusers' unpatchify bakes in a square grid under export).
            patch_size = int(cast(Any, denoiser).config.patch_size)
            embed: torch.nn.Module = cast(Any, denoiser).pos_embed
            pre = embed.register_forward_pre_hook(
                _dit_grid_hook(grid, patch_size), with_kwargs=True
            )
        post = denoiser.register_forward_hook(_clear_grid(grid), always_call=True)
        self._on_undo(pre.remove)
        self._on_undo(post.remove)

        notes = []
        weights: Path | None = self.options["weights"]
        if weights is None:
            notes.append(
                "no fine-tuned weights: local attention runs on the original projections"
                + (
                    " and spatial_weight starts at 1/f^2 (average pooling)"
                    if self.options["down"] > 1
                    else ""
                )
            )
        else:
            count = self._load_weights(denoiser, set(attentions), weights)
            notes.append(f"loaded {count} tensors from {weights.name!r} (strict=False)")
        if is_flux:
            notes.append(
                f"token grid: joint_attention_kwargs['{GRID_KWARG}'] = (h, w) when exporting"
            )
        return PatchReport(
            patch=self.name, options=dict(self.options), replaced=list(attentions), notes=notes
        )

    def wrapper_options(self) -> dict[str, Any]:
        """FLUX's transformer sees packed tokens: the wrapper hands it the token grid."""
        return {"grid_kwarg": GRID_KWARG} if self._is_flux else {}

    @staticmethod
    def _targets(denoiser: torch.nn.Module, is_flux: bool) -> dict[str, Any]:
        if is_flux:
            from diffusers.models.transformers.transformer_flux import FluxAttention

            found = {n: m for n, m in denoiser.named_modules() if isinstance(m, FluxAttention)}
        else:
            from diffusers.models.attention_processor import Attention

            found = {
                n: m
                for n, m in denoiser.named_modules()
                if isinstance(m, Attention)
                and n.endswith("attn1")
                and not getattr(m, "is_cross_attention", False)
            }
        if not found:
            raise DifforgeError(
                f"patch 'clear' found no image self-attention in {type(denoiser).__name__}"
            )
        return found

    def _load_weights(self, denoiser: torch.nn.Module, patched: set[str], path: Path) -> int:
        from safetensors.torch import load_file

        where = f"patch 'clear' weights {path.name!r}"
        try:
            state = load_file(str(path))
        except Exception as err:  # safetensors raises its own error types
            raise DifforgeError(f"{where}: cannot read ({err})") from None
        if not state:
            raise DifforgeError(f"{where}: no tensors")
        own = denoiser.state_dict(keep_vars=True)
        for key in sorted(state):
            owner, _, leaf = key.rpartition(".")
            attn_name = next(
                (
                    p
                    for p in patched
                    if owner
                    in (f"{p}.to_q", f"{p}.to_k", f"{p}.to_v", f"{p}.to_out.0", f"{p}.processor")
                ),
                None,
            )
            allowed = attn_name is not None and (
                not owner.endswith(".processor") or leaf == "spatial_weight"
            )
            if not allowed or key not in own:
                raise DifforgeError(
                    f"{where}: {key!r} is not a to_q/to_k/to_v/to_out/spatial_weight tensor "
                    "of a patched attention"
                )
            if tuple(state[key].shape) != tuple(own[key].shape):
                raise DifforgeError(
                    f"{where}: {key!r} has shape {tuple(state[key].shape)}, "
                    f"expected {tuple(own[key].shape)}"
                )
        with torch.no_grad():
            for key, tensor in state.items():
                target = own[key]
                saved = target.detach().clone()
                target.copy_(tensor.to(dtype=target.dtype, device=target.device))
                self._on_undo(functools.partial(_restore, target, saved))
        return len(state)
