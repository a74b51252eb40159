"""The shipped reference models on disk: diffusers folder layout plus a model card.

A model folder (``models/digits-unet``, …) holds ``model_index.json``, the denoiser's
``unet/`` or ``transformer/`` (``config.json`` + ``diffusion_pytorch_model.safetensors``),
``scheduler/scheduler_config.json``, ``card.json`` (what the tests check) and ``README.md``.
Each component loads with diffusers' ``from_pretrained(folder, subfolder=...)``; the pipeline
class name ``DifforgeClassPipeline`` is difforge's (diffusers has no pixel-space
class-conditional pipeline), and ``difforge compile --model`` reads it.

Attention distillations ship as patch weights for their base model, in the form each
method's authors release them: a LinFusion checkpoint folder, CLEAR's attention tensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import torch

from difforge.errors import DifforgeError
from difforge.reference.architectures import NULL_CLASS
from difforge.reference.data import NUM_CLASSES

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
PIPELINE_CLASS = "DifforgeClassPipeline"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def save_pipeline(
    folder: Path, model: torch.nn.Module, *, default_steps: int, default_guidance: float
) -> None:
    """Denoiser + flow-matching scheduler + model_index.json into ``folder`` (must exist)."""
    import diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler

    role = "transformer" if type(model).__name__ == "DiTTransformer2DModel" else "unet"
    cast(Any, model).save_pretrained(str(folder / role), safe_serialization=True)
    FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0).save_pretrained(
        str(folder / "scheduler")
    )
    guidance_input = bool(getattr(cast(Any, model).config, "time_cond_proj_dim", None))
    _write_json(
        folder / "model_index.json",
        {
            "_class_name": PIPELINE_CLASS,
            "_diffusers_version": diffusers.__version__,
            role: ["diffusers", type(model).__name__],
            "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
            "difforge": {
                "space": "pixel",
                "num_classes": NUM_CLASSES,
                "null_class": NULL_CLASS,
                "default_steps": default_steps,
                "default_guidance": default_guidance,
                "guidance_input": guidance_input,
                "reference": "digits",
            },
        },
    )


def load_denoiser(folder: Path) -> torch.nn.Module:
    """The denoiser of a shipped pipeline folder, in eval mode (the exporter's loader)."""
    from difforge.sources.diffusers_folder import load_folder

    return load_folder(folder).denoiser


def save_linfusion_checkpoint(folder: Path, model: torch.nn.Module) -> list[str]:
    """LinFusion's release layout: config.json ``modules_list`` + tensors keyed by index."""
    from safetensors.torch import save_file

    from difforge.patches.linfusion import GeneralizedLinearAttention

    modules = [
        (name, m) for name, m in model.named_modules() if isinstance(m, GeneralizedLinearAttention)
    ]
    entries, state = [], {}
    for index, (name, module) in enumerate(modules):
        entries.append(
            {
                "module_name": name,
                "dim_n": int(module.to_q.weight.shape[0]),
                "heads": int(module.heads),
                "projection_mid_dim": module.projection_mid_dim,
            }
        )
        for key, tensor in module.state_dict().items():
            state[f"{index}.{key}"] = tensor.detach().contiguous()
    _write_json(folder / "config.json", {"modules_list": entries})
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
    return [name for name, _ in modules]


CLEAR_WEIGHTS = "attention.safetensors"


def save_clear_weights(folder: Path, model: torch.nn.Module, layers: list[str]) -> Path:
    """CLEAR's fine-tuned ``to_q/to_k/to_v/to_out`` tensors, keyed like the model."""
    from safetensors.torch import save_file

    prefixes = tuple(f"{n}.{p}." for n in layers for p in ("to_q", "to_k", "to_v", "to_out.0"))
    state = {
        k: v.detach().contiguous() for k, v in model.state_dict().items() if k.startswith(prefixes)
    }
    path = folder / CLEAR_WEIGHTS
    save_file(state, str(path))
    return path


def write_card(folder: Path, card: dict[str, Any], readme: str) -> None:
    _write_json(folder / "card.json", card)
    (folder / "README.md").write_text(readme, encoding="utf-8")


def read_card(folder: Path) -> dict[str, Any]:
    path = folder / "card.json"
    if not path.is_file():
        raise DifforgeError(f"no model card at {path}: run `make reference`")
    return cast(dict[str, Any], json.loads(path.read_text()))


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors"))
