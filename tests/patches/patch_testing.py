"""Tiny models, float64 dense references and the dynamic-shape ONNX export recipe for the
patch tests. Imported by the test modules of this folder (pytest puts it on sys.path)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.export import Dim

# --------------------------------------------------------------------------- models


def tiny_unet(seed: int = 0) -> torch.nn.Module:
    """The tiny-sd preset's U-Net (random weights, eval)."""
    from difforge.sources.presets import tiny_sd_unet

    return tiny_sd_unet(seed)


def tiny_dit(seed: int = 0) -> torch.nn.Module:
    """The tiny-dit preset's transformer (no layer left at zero)."""
    from difforge.sources.presets import tiny_dit_transformer

    return tiny_dit_transformer(seed)


def unet_inputs(h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(1, 4, h, w, generator=g),
        torch.tensor([10.0]),
        torch.randn(1, 7, 64, generator=g),
    )


# --------------------------------------------------------------------------- comparisons


def rel_err(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """max|a - b| / max|b| (b is the reference)."""
    a_t = torch.as_tensor(a).detach().double()
    b_t = torch.as_tensor(b).detach().double()
    return float((a_t - b_t).abs().max() / b_t.abs().max())


# --------------------------------------------------------------------------- dense references


def dense_linear_attention(
    x: torch.Tensor, attn: torch.nn.Module, context: torch.Tensor | None = None
) -> torch.Tensor:
    """LinFusion's layer written densely from METHODS.md §1, in float64, from the weights.

    out_i = [(1/N) sum_j (q'_i . k'_j) v_j] / [(1/N) sum_j q'_i . k'_j + 1e-4]
    """
    x = x.double()
    ctx = x if context is None else context.double()

    def lin(layer: torch.nn.Module, t: torch.Tensor) -> torch.Tensor:
        bias = None if layer.bias is None else layer.bias.double()
        return F.linear(t, layer.weight.double(), bias)

    def mlp(seq: torch.nn.Module, t: torch.Tensor) -> torch.Tensor:
        if isinstance(seq, torch.nn.Identity):
            return t
        hidden = lin(seq[0], t)
        hidden = F.layer_norm(
            hidden, (hidden.shape[-1],), seq[1].weight.double(), seq[1].bias.double(), seq[1].eps
        )
        return lin(seq[3], F.leaky_relu(hidden, 0.01))

    q = lin(attn.to_q, x + mlp(attn.to_q_, x))
    k = lin(attn.to_k, ctx + mlp(attn.to_k_, ctx))
    v = lin(attn.to_v, ctx)
    b, n, c = q.shape
    heads = attn.heads
    q, k, v = (t.reshape(b, -1, heads, c // heads).transpose(1, 2) for t in (q, k, v))
    q, k = F.elu(q) + 1, F.elu(k) + 1
    scores = q @ k.transpose(-1, -2) / n  # (b, heads, N, M), 1/N uses the query length
    out = (scores @ v) / (scores.sum(-1, keepdim=True) + 1e-4)
    out = out.transpose(1, 2).reshape(b, n, c)
    return lin(attn.to_out[0], out)


def clear_mask(
    height: int, width: int, num_global: int, radius: int, down: int = 1
) -> torch.Tensor:
    """CLEAR's visibility as a dense [T+HW, T+HW+P] boolean mask, from the authors' predicate."""
    pooled = (height // down) * (width // down) if down > 1 else 0
    return _clear_mask(height, width, num_global, radius, pooled)


def _clear_mask(height: int, width: int, t: int, radius: int, p: int) -> torch.Tensor:
    hw = height * width
    q_idx = torch.arange(t + hw).view(-1, 1)
    kv_idx = torch.arange(t + hw + p).view(1, -1)
    qy, qx = (q_idx - t) // width, (q_idx - t) % width
    ky, kx = (kv_idx - t) // width, (kv_idx - t) % width
    local = (qy - ky) ** 2 + (qx - kx) ** 2 < radius**2
    if p == 0:
        return (q_idx < t) | (kv_idx < t) | local
    text_rows = (q_idx < t) & (kv_idx < t + hw)
    image_rows = (q_idx >= t) & ((kv_idx < t) | (kv_idx >= t + hw) | local)
    return text_rows | image_rows


def dense_local_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    height: int,
    width: int,
    num_global: int,
    radius: int,
    window: str,
    scale: float,
    num_pooled: int,
) -> torch.Tensor:
    """Stand-in for difforge::local_attention_2d computed densely in the inputs' dtype."""
    assert window == "disc"
    mask = _clear_mask(height, width, num_global, radius, num_pooled)
    scale = scale if scale > 0 else q.shape[-1] ** -0.5
    return masked_attention(q, k, v, mask, scale).to(q.dtype)


def masked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float
) -> torch.Tensor:
    """Softmax attention in float64 with a dense boolean mask; q/k/v (B, heads, S, d)."""
    logits = (q.double() @ k.double().transpose(-1, -2)) * scale
    logits = logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, dim=-1) @ v.double()


def window_mask(height: int, width: int, quarter: int) -> torch.Tensor:
    """MSW-MSA on an even grid as an [HW, HW] mask: same window after the cyclic shift."""
    wh, ww = height // 2, width // 2
    sy, sx = wh // 4 * quarter, ww // 4 * quarter
    r = torch.arange(height).repeat_interleave(width)
    c = torch.arange(width).repeat(height)
    window = ((r - sy) % height) // wh * 2 + ((c - sx) % width) // ww
    return window.view(-1, 1) == window.view(1, -1)


def authors_msw_partition(
    x: torch.Tensor, height: int, width: int, shift: tuple[int, int]
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """HiDiffusion's window_partition / window_reverse (torch.roll + views), for comparison."""
    b, _, c = x.shape
    wh, ww = math.ceil(height / 2), math.ceil(width / 2)
    img = x.view(b, height, width, c)
    odd = height % 2 != 0 or width % 2 != 0
    if odd:
        img = F.interpolate(img.permute(0, 3, 1, 2), size=(2 * wh, 2 * ww), mode="bicubic")
        img = img.permute(0, 2, 3, 1)
    if shift[0] > 0:
        img = torch.roll(img, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    windows = img.reshape(b, 2, wh, 2, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, wh * ww, c)

    def reverse(out: torch.Tensor) -> torch.Tensor:
        y = (
            out.reshape(b, 2, 2, wh, ww, -1)
            .permute(0, 1, 3, 2, 4, 5)
            .reshape(b, 2 * wh, 2 * ww, -1)
        )
        if shift[0] > 0:
            y = torch.roll(y, shifts=(shift[0], shift[1]), dims=(1, 2))
        if odd:
            y = F.interpolate(y.permute(0, 3, 1, 2), size=(height, width), mode="bicubic")
            y = y.permute(0, 2, 3, 1)
        return y.reshape(b, height * width, -1)

    return windows, reverse


# --------------------------------------------------------------------------- export recipe
#
# What works with torch 2.13 / onnxscript 0.7.2 (torch.onnx.export(dynamo=True)):
# * dynamic_shapes as a dict keyed by the wrapper's forward argument names; spatial dims as
#   derived dims, e.g. latent H = 2*h with h = Dim("h", min=2, max=64) (an even latent keeps
#   the UNet's down/upsampling exact, so no guard is raised); CLEAR down=f needs H = p*f*h.
# * DiT: diffusers' DiTTransformer2DModel.forward unpatchifies with int(N ** 0.5), which
#   torch.export silently bakes to the example's size (ORT then fails at any other size);
#   DiTExportWrapper below re-does the unpatchify from the input's H, W. Square only (both
#   dims share one Dim), since PatchEmbed's pos-embed assumes nothing else either.
# * FLUX: hidden_states are packed tokens, so the grid (h, w) cannot be read from them;
#   FluxExportWrapper takes (B, C, 2h, 2w) latents, packs them and builds img_ids in the
#   graph, and passes joint_attention_kwargs={"clear_grid": (h, w)} (SymInts).
# * Extra inputs (MSW-MSA's shift) go in as plain tensors routed through
#   cross_attention_kwargs inside the wrapper; their dims stay static (None).


class UNetExportWrapper(torch.nn.Module):
    """(sample, timestep, encoder_hidden_states[, msw_msa_shift]) -> noise prediction.

    An extra input is handed to the UNet inside cross_attention_kwargs under its own name,
    which is how MSW-MSA's patch expects it.
    """

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        msw_msa_shift: torch.Tensor | None = None,
    ) -> torch.Tensor:
        kwargs = None if msw_msa_shift is None else {"msw_msa_shift": msw_msa_shift}
        return self.unet(
            sample,
            timestep,
            encoder_hidden_states,
            cross_attention_kwargs=kwargs,
            return_dict=False,
        )[0]


class DiTExportWrapper(torch.nn.Module):
    """diffusers' DiT forward with the unpatchify taken from the input's H, W."""

    def __init__(self, dit: torch.nn.Module) -> None:
        super().__init__()
        self.dit = dit

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, class_labels: torch.Tensor
    ) -> torch.Tensor:
        dit = self.dit
        p = dit.patch_size
        height, width = sample.shape[-2] // p, sample.shape[-1] // p
        hidden = dit.pos_embed(sample)
        for block in dit.transformer_blocks:
            hidden = block(hidden, timestep=timestep, class_labels=class_labels)
        conditioning = dit.transformer_blocks[0].norm1.emb(
            timestep, class_labels, hidden_dtype=hidden.dtype
        )
        shift, scale = dit.proj_out_1(F.silu(conditioning)).chunk(2, dim=1)
        hidden = dit.norm_out(hidden) * (1 + scale[:, None]) + shift[:, None]
        hidden = dit.proj_out_2(hidden)
        hidden = hidden.reshape(-1, height, width, p, p, dit.out_channels)
        hidden = torch.einsum("nhwpqc->nchpwq", hidden)
        return hidden.reshape(-1, dit.out_channels, height * p, width * p)


class FluxExportWrapper(torch.nn.Module):
    """(latents (B, C, 2h, 2w), encoder_hidden_states, pooled, timestep) -> packed prediction."""

    def __init__(self, flux: torch.nn.Module, pass_grid: bool = True) -> None:
        super().__init__()
        self.flux = flux
        self.pass_grid = pass_grid

    def forward(
        self,
        latents: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        pooled_projections: torch.Tensor,
        timestep: torch.Tensor,
    ) -> torch.Tensor:
        from difforge.sources.tiny_flux import pack_latents, prepare_ids

        h, w = latents.shape[-2] // 2, latents.shape[-1] // 2
        img_ids, txt_ids = prepare_ids(h, w, encoder_hidden_states.shape[1])
        kwargs = {"clear_grid": (h, w)} if self.pass_grid else None
        return self.flux(
            pack_latents(latents),
            encoder_hidden_states,
            pooled_projections,
            timestep,
            img_ids.to(latents.device),
            txt_ids.to(latents.device),
            joint_attention_kwargs=kwargs,
            return_dict=False,
        )[0]


def export_onnx(
    module: torch.nn.Module,
    args: tuple[Any, ...],
    dynamic_shapes: Mapping[str, Any],
    path: Path,
    custom_translation_table: Mapping[Any, Any] | None = None,
) -> Path:
    """torch.onnx.export(dynamo=True) with dynamic shapes; returns the saved path."""
    program = torch.onnx.export(
        module,
        args,
        dynamic_shapes=dict(dynamic_shapes),
        dynamo=True,
        custom_translation_table=dict(custom_translation_table or {}),
        verbose=False,
    )
    assert program is not None
    program.save(str(path))
    return path


def ort_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_ort(session: Any, inputs: Sequence[torch.Tensor]) -> np.ndarray:
    names = [i.name for i in session.get_inputs()]
    assert len(names) == len(inputs), names
    feed = {n: t.detach().numpy() for n, t in zip(names, inputs, strict=True)}
    return session.run(None, feed)[0]


def spatial_dims(*names: str, multiple: int, lo: int = 2, hi: int = 64) -> list[Any]:
    """Derived dims ``multiple * Dim(name)`` for latent H/W."""
    return [multiple * Dim(n, min=lo, max=hi) for n in names]
