"""LinFusion: generalized linear attention in place of every UNet self-attention.

Reproduces ``GeneralizedLinearAttention`` of Huage001/LinFusion (``src/linfusion``):
whole-module replacement of each diffusers ``Attention`` whose name contains ``attn1``;
cross-attention (``attn2``) is untouched. Checkpoints are read in the authors' release
layout (``LinFusion.save_pretrained``: ``config.json`` with ``modules_list`` and
``diffusion_pytorch_model.safetensors`` keyed by the entry index, e.g. ``0.to_q.weight``,
``0.to_q_.1.weight`` for the MLP's LayerNorm).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from difforge.errors import DifforgeError
from difforge.patches import register_patch
from difforge.patches.base import Patch, PatchOption, PatchReport, replace_submodule

__all__ = ["GeneralizedLinearAttention", "LinFusionPatch", "linear_attention"]

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
CONFIG_NAME = "config.json"

# Added to the normaliser: the authors' constant, which keeps 1/z finite in fp16.
_EPS = 1e-4


def _projection_mlp(dim: int, mid_dim: int | None) -> torch.nn.Module:
    # mid_dim None -> width dim; -1 -> identity. The residual x + mlp(x) is added either way,
    # so with -1 the projection input is 2x (the authors' behaviour, kept on purpose).
    if mid_dim == -1:
        return torch.nn.Identity()
    width = mid_dim or dim
    return torch.nn.Sequential(
        torch.nn.Linear(dim, width),
        torch.nn.LayerNorm(width),
        torch.nn.LeakyReLU(0.01),
        torch.nn.Linear(width, dim),
    )


def linear_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Normalised linear attention with phi = elu + 1, in the authors' factored order.

    ``query``/``key``/``value`` are ``(batch*heads, N, d)`` before the feature map. The
    sqrt(N) split of 1/N on both factors keeps the d x d state inside fp16 range.
    """
    sequence_length = query.shape[1]
    query = F.elu(query) + 1.0
    key = F.elu(key) + 1.0
    z = query @ key.mean(dim=-2, keepdim=True).transpose(-2, -1) + _EPS
    scale = sequence_length**-0.5
    kv = (key.transpose(-2, -1) * scale) @ (value * scale)
    return query @ kv / z


class GeneralizedLinearAttention(Attention):
    """Drop-in ``Attention`` computing LinFusion's linear attention; mask ignored."""

    def __init__(self, dim: int, heads: int, projection_mid_dim: int | None = None) -> None:
        super().__init__(query_dim=dim, out_dim=dim, dim_head=dim // heads)
        self.projection_mid_dim = projection_mid_dim
        self.to_q_ = _projection_mlp(dim, projection_mid_dim)
        self.to_k_ = _projection_mlp(dim, projection_mid_dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **cross_attention_kwargs: Any,
    ) -> torch.Tensor:
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        query = self.to_q(hidden_states + self.to_q_(hidden_states))
        key = self.to_k(encoder_hidden_states + self.to_k_(encoder_hidden_states))
        value = self.to_v(encoder_hidden_states)
        out = linear_attention(
            self.head_to_batch_dim(query),
            self.head_to_batch_dim(key),
            self.head_to_batch_dim(value),
        )
        out = self.batch_to_head_dim(out)
        out = self.to_out[0](out)
        return self.to_out[1](out)


def _self_attentions(unet: torch.nn.Module) -> dict[str, Attention]:
    # The authors' selection rule (LinFusion.get_default_config).
    return {
        name: module
        for name, module in unet.named_modules()
        if isinstance(module, Attention) and "attn1" in name
    }


def _read_checkpoint(folder: Path) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    where = f"LinFusion checkpoint {str(folder)!r}"
    if not folder.is_dir():
        raise DifforgeError(f"{where} is not a folder (expected {CONFIG_NAME} + {WEIGHTS_NAME})")
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise DifforgeError(f"{where} has no {CONFIG_NAME}")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DifforgeError(f"{where}: {CONFIG_NAME} is not valid JSON ({err})") from None
    modules_list = config.get("modules_list") if isinstance(config, dict) else None
    if not isinstance(modules_list, list) or not modules_list:
        raise DifforgeError(f"{where}: {CONFIG_NAME} has no modules_list")
    for i, entry in enumerate(modules_list):
        if not isinstance(entry, dict) or not {"module_name", "dim_n", "heads"} <= set(entry):
            raise DifforgeError(f"{where}: modules_list[{i}] lacks module_name, dim_n or heads")
    weights_path = folder / WEIGHTS_NAME
    if not weights_path.is_file():
        candidates = sorted(folder.glob("*.safetensors"))
        if len(candidates) != 1:
            raise DifforgeError(f"{where} has no {WEIGHTS_NAME}")
        weights_path = candidates[0]
    try:
        state = load_file(str(weights_path))
    except Exception as err:  # safetensors raises its own error types
        raise DifforgeError(f"{where}: cannot read {weights_path.name} ({err})") from None
    return modules_list, state


@register_patch
class LinFusionPatch(Patch):
    """Replace every ``attn1`` of a UNet by LinFusion's generalized linear attention."""

    name = "linfusion"
    summary = "LinFusion generalized linear attention for every UNet self-attention (attn1)"
    main_option = "checkpoint"
    targets = ("UNet2DConditionModel",)
    option_specs = (
        PatchOption(
            "checkpoint",
            "path",
            None,
            "LinFusion checkpoint folder (config.json + diffusion_pytorch_model.safetensors); "
            "without it the layers start from the original attention and are not distilled",
        ),
        PatchOption(
            "mid_dim",
            "int",
            None,
            "projection MLP width without a checkpoint: unset = channels, -1 = identity MLP",
            minimum=-1,
        ),
    )

    def _validate(self) -> None:
        mid_dim = self.options["mid_dim"]
        if mid_dim == 0:
            raise DifforgeError("patch 'linfusion' option 'mid_dim': must be -1 or at least 1")
        if mid_dim is not None and self.options["checkpoint"] is not None:
            raise DifforgeError(
                "patch 'linfusion' option 'mid_dim': the checkpoint's config.json sets it"
            )

    def _apply(self, denoiser: torch.nn.Module) -> PatchReport:
        originals = _self_attentions(denoiser)
        if not originals:
            raise DifforgeError(
                f"patch 'linfusion' found no self-attention (attn1) in {type(denoiser).__name__}"
            )
        checkpoint: Path | None = self.options["checkpoint"]
        if checkpoint is None:
            replacements = self._from_original(originals)
            notes = [
                "initialised from the original attention (to_q/to_k/to_v/to_out copied, "
                "projection MLPs output zero); no checkpoint: outputs differ from the "
                "original model until the layers are distilled"
            ]
        else:
            replacements = self._from_checkpoint(originals, checkpoint)
            notes = [f"weights from LinFusion checkpoint {checkpoint.name!r}"]
        for name, new in replacements.items():
            original = originals[name]
            replace_submodule(denoiser, name, new)
            self._on_undo(functools.partial(replace_submodule, denoiser, name, original))
        return PatchReport(
            patch=self.name, options=dict(self.options), replaced=list(replacements), notes=notes
        )

    def _from_original(self, originals: dict[str, Attention]) -> dict[str, torch.nn.Module]:
        out: dict[str, torch.nn.Module] = {}
        # A fixed seed for the MLP's hidden layers, without touching the caller's RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            for name, original in originals.items():
                dim = original.to_q.weight.shape[0]
                new = GeneralizedLinearAttention(dim, original.heads, self.options["mid_dim"])
                with torch.no_grad():
                    for attr in ("to_q", "to_k", "to_v"):
                        src = getattr(original, attr)
                        dst = getattr(new, attr)
                        if src.weight.shape != dst.weight.shape or src.bias is not None:
                            raise DifforgeError(
                                f"patch 'linfusion': {name}.{attr} is not a {dim}x{dim} "
                                "projection without bias"
                            )
                        dst.weight.copy_(src.weight)
                    new.to_out[0].weight.copy_(original.to_out[0].weight)
                    new.to_out[0].bias.copy_(original.to_out[0].bias)
                    for mlp in (new.to_q_, new.to_k_):
                        last = mlp[3] if isinstance(mlp, torch.nn.Sequential) else None
                        if isinstance(last, torch.nn.Linear):
                            last.weight.zero_()
                            last.bias.zero_()
                out[name] = self._placed(new, original)
        return out

    def _from_checkpoint(
        self, originals: dict[str, Attention], folder: Path
    ) -> dict[str, torch.nn.Module]:
        modules_list, state = _read_checkpoint(folder)
        where = f"LinFusion checkpoint {folder.name!r}"
        listed = [str(entry["module_name"]) for entry in modules_list]
        for name in listed:
            if name not in originals:
                raise DifforgeError(
                    f"{where}: module {name!r} is not a self-attention of this UNet"
                )
        for name in originals:
            if name not in listed:
                raise DifforgeError(f"{where} has no entry for {name!r}")
        out: dict[str, torch.nn.Module] = {}
        used: set[str] = set()
        for index, entry in enumerate(modules_list):
            name = str(entry["module_name"])
            original = originals[name]
            dim = original.to_q.weight.shape[0]
            if int(entry["dim_n"]) != dim or int(entry["heads"]) != original.heads:
                raise DifforgeError(
                    f"{where}: {name} has dim_n={entry['dim_n']}, heads={entry['heads']} "
                    f"but the UNet has {dim} channels, {original.heads} heads"
                )
            mid = entry.get("projection_mid_dim")
            new = GeneralizedLinearAttention(dim, original.heads, None if mid is None else int(mid))
            expected = new.state_dict()
            loaded: dict[str, torch.Tensor] = {}
            for key, tensor in expected.items():
                full = f"{index}.{key}"
                if full not in state:
                    raise DifforgeError(f"{where}: missing tensor {full!r} ({name})")
                if tuple(state[full].shape) != tuple(tensor.shape):
                    raise DifforgeError(
                        f"{where}: {full!r} has shape {tuple(state[full].shape)}, "
                        f"expected {tuple(tensor.shape)} ({name})"
                    )
                loaded[key] = state[full]
                used.add(full)
            new.load_state_dict(loaded)
            out[name] = self._placed(new, original)
        unused = sorted(set(state) - used)
        if unused:
            raise DifforgeError(f"{where}: tensor {unused[0]!r} matches no module")
        return out

    @staticmethod
    def _placed(new: torch.nn.Module, original: Attention) -> torch.nn.Module:
        weight = original.to_q.weight
        new.to(device=weight.device, dtype=weight.dtype)
        new.train(original.training)
        new.requires_grad_(weight.requires_grad)
        return new
