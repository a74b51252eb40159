"""Real-size diffusers folders with seeded random weights, for benchmarks (no model hub).

Usage: python scripts/real_size_folders.py sd15|sd15-lcm|sdxl OUT [--seed 0]

``sd15``: Stable Diffusion 1.5's architecture as its published configs give it: the U-Net
(860 M parameters: 320/640/1280/1280 channels, 2 layers per block, cross-attention width 768,
8 heads), a CLIP ViT-L/14-shaped text encoder (12 layers, width 768) and the SD VAE (128/256/
512/512 channels), under a DDIM scheduler with SD's betas. The only difference is the text
encoder's token table: it is sized to the BPE vocabulary difforge ships, so the folder's
tokenizer is that one. Weights are random (seeded): the images are noise; what is measured on
these folders is time and memory, never image quality.

``sd15-lcm``: the same folder under ``LCMScheduler``, as SD1.5 checkpoints with LCM-LoRA
fused ship (the few-step overhead benchmark, ``scripts/few_step_overhead.py``).

``sdxl``: SDXL base 1.0's architecture from its configs: the U-Net (2.6 B parameters: 320/640/
1280 channels, 1/2/10 transformer layers per level, cross-attention width 2048, text-time
added conditioning), CLIP ViT-L/14's text tower and OpenCLIP ViT-bigG/14's (32 layers, width
1280, projected to 1280), the SDXL VAE, an Euler scheduler; token tables sized to the shipped
vocabulary, the second tokenizer padding with "!" as SDXL's does.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

#: diffusers' UNet2DConditionModel config of SD 1.5 (runwayml/stable-diffusion-v1-5, unet/)
SD15_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}
#: CLIP ViT-L/14's text tower (SD 1.5's text encoder), less its 49408-token table
SD15_TEXT = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
#: SD's AutoencoderKL (vae/ of SD 1.5)
SD_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}


def sd15(dst: Path, seed: int = 0) -> Path:
    """Write an SD 1.5-architecture ``StableDiffusionPipeline`` folder at ``dst``."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from difforge.sources.presets import SD_SCHEDULER, VOCAB_DIR

    vocab = len(json.loads((VOCAB_DIR / "vocab.json").read_text()))
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**SD15_UNET).eval()
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab,
            bos_token_id=vocab - 2,
            eos_token_id=vocab - 1,
            pad_token_id=vocab - 1,
            **SD15_TEXT,
        )
    ).eval()
    vae = AutoencoderKL(**SD_VAE).eval()
    scheduler = DDIMScheduler.from_config(
        {k: v for k, v in SD_SCHEDULER.items() if k != "_class_name"}
    )
    tokenizer = CLIPTokenizer(
        str(VOCAB_DIR / "vocab.json"), str(VOCAB_DIR / "merges.txt"), model_max_length=77
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(str(dst))
    return dst


#: SDXL base 1.0's U-Net (stabilityai/stable-diffusion-xl-base-1.0, unet/)
SDXL_UNET: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "transformer_layers_per_block": [1, 2, 10],
    "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
}
#: OpenCLIP ViT-bigG/14's text tower (SDXL's text_encoder_2)
SDXL_TEXT_2 = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}


def sdxl(dst: Path, seed: int = 0) -> Path:
    """Write an SDXL-base-architecture ``StableDiffusionXLPipeline`` folder at ``dst``."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    from difforge.sources.presets import SD_SCHEDULER, VOCAB_DIR

    vocab = len(json.loads((VOCAB_DIR / "vocab.json").read_text()))
    ids = {"vocab_size": vocab, "bos_token_id": vocab - 2, "eos_token_id": vocab - 1,
           "pad_token_id": vocab - 1}
    torch.manual_seed(seed)
    files = (str(VOCAB_DIR / "vocab.json"), str(VOCAB_DIR / "merges.txt"))
    pipeline = StableDiffusionXLPipeline(
        vae=AutoencoderKL(**{**SD_VAE, "sample_size": 1024, "scaling_factor": 0.13025}).eval(),
        text_encoder=CLIPTextModel(CLIPTextConfig(**ids, **SD15_TEXT)).eval(),
        text_encoder_2=CLIPTextModelWithProjection(
            CLIPTextConfig(**ids, **SDXL_TEXT_2)
        ).eval(),
        tokenizer=CLIPTokenizer(*files, model_max_length=77),
        tokenizer_2=CLIPTokenizer(*files, model_max_length=77, pad_token="!"),
        unet=UNet2DConditionModel(**SDXL_UNET).eval(),
        scheduler=EulerDiscreteScheduler.from_config(
            {k: v for k, v in SD_SCHEDULER.items() if k != "_class_name"}
        ),
    )
    pipeline.save_pretrained(str(dst))
    return dst


def sd15_lcm(dst: Path, seed: int = 0) -> Path:
    """An SD 1.5-architecture folder as an LCM-LoRA-fused checkpoint ships: the same U-Net
    under ``LCMScheduler`` (a 1- to 4-step student; the weights are random here, so it is
    timed, never judged)."""
    from diffusers import LCMScheduler

    from difforge.sources.presets import SD_SCHEDULER

    sd15(dst, seed)
    config = {k: v for k, v in SD_SCHEDULER.items() if k != "_class_name"}
    LCMScheduler.from_config(config).save_pretrained(str(dst / "scheduler"))
    return dst


FOLDERS = {"sd15": sd15, "sd15-lcm": sd15_lcm, "sdxl": sdxl}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(FOLDERS))
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if (args.out / "model_index.json").is_file():
        print(f"{args.out} exists; kept")
        return
    path = FOLDERS[args.model](args.out, args.seed)
    unet = sum(f.stat().st_size for f in (path / "unet").glob("*.safetensors"))
    print(f"wrote {path} (U-Net weights {unet / 1e9:.2f} GB)")


if __name__ == "__main__":
    main()
