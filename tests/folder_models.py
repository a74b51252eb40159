"""Tiny random-weight diffusers pipelines of each class difforge compiles, written with
``save_pretrained`` as a user's folder would be, and loaded back as diffusers pipelines for
reference runs. Sized to export in seconds: a 2-level VAE (2x latents) and U-Net, 2-layer
text encoders; images are 32 px."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from difforge.sources.presets import SD_SCHEDULER as PRESET_SCHEDULER
from difforge.sources.presets import VOCAB_DIR
from tests.reference_pipelines import clip_tokenizer

#: the size every folder case is compiled and compared at
SIZE = 32
#: SD's noise schedule without a class or spacing: each case picks its scheduler class, and
#: each class keeps its own default spacing unless the case names one
SD_SCHEDULER = {
    k: v for k, v in PRESET_SCHEDULER.items() if k not in ("_class_name", "timestep_spacing")
}


def _seeded(seed: int, build: Callable[[], Any]) -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
        # diffusers zero-initialises some output layers; random weights everywhere keep
        # every comparison meaningful
        with torch.no_grad():
            for param in model.parameters():
                if param.numel() > 1 and not param.any():
                    param.normal_(0.0, 0.05)
    return model.eval()


def _vocab_size() -> int:
    return len(json.loads((VOCAB_DIR / "vocab.json").read_text()))


def clip(seed: int, projection: bool = False, hidden: int = 32, projection_dim: int = 0) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    n = _vocab_size()
    config = CLIPTextConfig(
        vocab_size=n,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=projection_dim or hidden,
        bos_token_id=n - 2,
        eos_token_id=n - 1,
        pad_token_id=n - 1,
    )
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return _seeded(seed, lambda: cls(config))


def vae(seed: int, channels: int = 4, shift: float | None = None) -> Any:
    from diffusers import AutoencoderKL

    return _seeded(
        seed,
        lambda: AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            block_out_channels=(8, 16),
            layers_per_block=1,
            latent_channels=channels,
            norm_num_groups=4,
            sample_size=SIZE,
            scaling_factor=0.18215 if shift is None else 0.3611,
            shift_factor=shift,
        ),
    )


def unet(seed: int, context: int = 32, **extra: Any) -> Any:
    from diffusers import UNet2DConditionModel

    return _seeded(
        seed,
        lambda: UNet2DConditionModel(
            sample_size=SIZE // 2,
            block_out_channels=(16, 32),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=context,
            attention_head_dim=4,
            norm_num_groups=8,
            mid_block_type=None,  # fewer modules: a faster export, the same interface
            **extra,
        ),
    )


def sd_pipeline(
    scheduler: Any, pad: str = "<|endoftext|>", time_cond: int | None = None, lcm: bool = False
) -> Any:
    """StableDiffusionPipeline (or LatentConsistencyModelPipeline) on tiny parts."""
    import diffusers

    parts = {
        "vae": vae(1),
        "text_encoder": clip(2),
        "tokenizer": clip_tokenizer(pad),
        "unet": unet(3, time_cond_proj_dim=time_cond),
        "scheduler": scheduler,
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }
    cls = diffusers.LatentConsistencyModelPipeline if lcm else diffusers.StableDiffusionPipeline
    return cls(**parts)


def sdxl_pipeline(scheduler: Any) -> Any:
    """StableDiffusionXLPipeline: two CLIPs of different widths (the second projected, padding
    with "!", as SDXL's do), a U-Net with text-time added conditioning."""
    import diffusers

    time_dim = 8
    return diffusers.StableDiffusionXLPipeline(
        vae=vae(1),
        text_encoder=clip(2),
        text_encoder_2=clip(4, projection=True, hidden=48, projection_dim=40),
        tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer("!"),
        unet=unet(
            3,
            context=32 + 48,
            addition_embed_type="text_time",
            addition_time_embed_dim=time_dim,
            projection_class_embeddings_input_dim=6 * time_dim + 40,
        ),
        scheduler=scheduler,
    )


def t5_tokenizer(folder: Path, window: int = 24) -> Any:
    """A T5 tokenizer trained offline on a few sentences (ids: <pad> 0, </s> 1, <unk> 2)."""
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import T5TokenizerFast

    words = ["a", "photo", "of", "red", "blue", "boat", "cat", "dog", "on", "the", "sea", "at",
             "night", "small", "big", "painting"]
    sentences = [" ".join(words[i:] + words[:i]) for i in range(len(words))]
    trained = SentencePieceUnigramTokenizer()
    trained.train_from_iterator(
        sentences * 3,
        vocab_size=80,
        special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        show_progress=False,
    )
    tok = T5TokenizerFast(
        tokenizer_object=trained._tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_ids=0,
        model_max_length=window,
    )
    tok.save_pretrained(str(folder))
    return T5TokenizerFast.from_pretrained(str(folder))


def flux_pipeline(scheduler: Any, tmp: Path, guided: bool) -> Any:
    """FluxPipeline: CLIP (pooled) + T5 (token states), a tiny FLUX transformer
    (``guidance_embeds`` for a dev-type model), a 16-channel VAE with a shift factor."""
    import diffusers
    from transformers import T5Config, T5EncoderModel

    from difforge.sources.tiny_flux import build_tiny_flux_transformer

    t5 = _seeded(
        5,
        lambda: T5EncoderModel(
            T5Config(vocab_size=80, d_model=32, d_ff=64, d_kv=16, num_layers=2, num_heads=2)
        ),
    )
    transformer = build_tiny_flux_transformer(6, in_channels=64, guidance_embeds=guided)
    return diffusers.FluxPipeline(
        scheduler=scheduler,
        vae=vae(1, channels=16, shift=0.1159),
        text_encoder=clip(2),
        tokenizer=clip_tokenizer(),
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer(tmp / "t5-tokenizer"),
        transformer=transformer,
    )
