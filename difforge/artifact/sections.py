"""The manifest's pipeline, scheduler and tokenizer sections: how the components make an
image, read field by field like the rest of the manifest."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from difforge.artifact.fields import Fields
from difforge.artifact.files import check_relative
from difforge.errors import DifforgeError

PIPELINE_TYPES = ("text-to-image", "sdxl", "class-to-image", "flux")
#: Sanity bound on sizes a manifest may state (far above any real model).
MAX_AXIS = 1 << 16
#: CLIP's end-of-text token: what a manifest that names no pad token pads with
END_OF_TEXT = "<|endoftext|>"
#: Sanity bound on a token's length (CLIP's longest is a few dozen characters)
MAX_TOKEN_CHARS = 256


@dataclass
class Resolution:
    """Pixel resolutions an artifact is built for; ``multiple`` is the model's size factor."""

    min: int
    default: int
    max: int
    multiple: int

    def check(self, label: str, size: int) -> None:
        """Refuse a height or width this artifact cannot generate (the one place it is said)."""
        if not self.min <= size <= self.max:
            raise DifforgeError(
                f"{label} {size} is outside this artifact's range [{self.min}, {self.max}] "
                "(rebuild with a wider --resolution range)"
            )
        if size % self.multiple:
            raise DifforgeError(
                f"{label} {size} is not a multiple of {self.multiple} (the model's factor)"
            )

    @classmethod
    def read(cls, f: Fields) -> Resolution:
        keys = ("min", "default", "max", "multiple")
        res = cls(*(f.integer(k, minimum=1, maximum=MAX_AXIS) for k in keys))
        if not res.min <= res.default <= res.max:
            raise f.fail("default", "needs min <= default <= max")
        return res


@dataclass
class PipelineSection:
    """How the components make an image: conditioning kind, latent geometry, defaults."""

    type: str
    latent_channels: int
    vae_scale_factor: int
    scaling_factor: float
    resolution: Resolution
    default_guidance: float
    num_classes: int = 0
    null_class: int = 0
    #: a pixel-space model: no VAE, the samples are the images
    pixel_space: bool = False
    #: a guidance-distilled model: the scale is a denoiser input, not two passes
    guidance_input: bool = False
    #: SDXL's ``force_zeros_for_empty_prompt``: without a negative prompt, the unconditional
    #: half of classifier-free guidance is zeros rather than the encoded empty prompt
    zero_negative: bool = False

    @property
    def text_conditioned(self) -> bool:
        return self.type in ("text-to-image", "sdxl", "flux")

    @classmethod
    def read(cls, f: Fields) -> PipelineSection:
        kind = f.text("type", choices=PIPELINE_TYPES)
        classes = kind == "class-to-image"
        num_classes = f.integer("num_classes", minimum=1, maximum=MAX_AXIS) if classes else 0
        null_class = f.integer("null_class", minimum=0, maximum=num_classes) if classes else 0
        return cls(
            type=kind,
            latent_channels=f.integer("latent_channels", minimum=1, maximum=4096),
            vae_scale_factor=f.integer("vae_scale_factor", minimum=1, maximum=64),
            scaling_factor=f.number("scaling_factor", minimum=1e-6, maximum=1e6),
            resolution=Resolution.read(f.obj("resolution")),
            default_guidance=f.number("default_guidance", minimum=0.0, maximum=1000.0),
            num_classes=num_classes,
            null_class=null_class,
            pixel_space=f.flag("pixel_space"),
            guidance_input=f.flag("guidance_input"),
            zero_negative=f.flag("zero_negative"),
        )


@dataclass
class SchedulerSection:
    """The sampler a model was trained for, its diffusers config, and a note when the model's
    own scheduler class is sampled by another runtime sampler with the same noise schedule."""

    name: str
    config: dict[str, Any]
    default_steps: int
    note: str | None = None

    @classmethod
    def read(cls, f: Fields) -> SchedulerSection:
        return cls(
            name=f.text("name"),
            config=f.table("config"),
            default_steps=f.integer("default_steps", minimum=1, maximum=10_000),
            note=f.text("note", None),
        )


#: tokenizer file formats: CLIP's BPE pair (vocab.json + merges.txt), or one tokenizer.json
#: read through the ``tokenizers`` library (T5's SentencePiece model)
TOKENIZER_TYPES = ("clip-bpe", "json")


@dataclass
class TokenizerSection:
    """The tokenizer's files, its window, and the token prompts are padded with (the model's:
    SD 2.x and SD-Turbo pad with "!"; a manifest without one pads with end-of-text). A "json"
    tokenizer's one file is ``vocab``; it has no ``merges``."""

    type: str
    vocab: str
    merges: str = ""
    max_length: int = 77
    pad_token: str = END_OF_TEXT

    @classmethod
    def read(cls, f: Fields) -> TokenizerSection:
        pad = f.text("pad_token", END_OF_TEXT)
        if not 0 < len(pad) <= MAX_TOKEN_CHARS:
            raise f.fail("pad_token", f"expected 1 to {MAX_TOKEN_CHARS} characters")
        kind = f.text("type", choices=TOKENIZER_TYPES)
        if kind == "json":
            if f.text("merges", ""):
                raise f.fail("merges", "a json tokenizer has no merges file")
            merges = ""
        else:
            merges = check_relative(f.text("merges"), f.where("merges"))
        return cls(
            type=kind,
            vocab=check_relative(f.text("vocab"), f.where("vocab")),
            merges=merges,
            max_length=f.integer("max_length", 77, minimum=3, maximum=4096),
            pad_token=pad,
        )

    @property
    def files(self) -> list[str]:
        return [self.vocab, self.merges] if self.merges else [self.vocab]

    def check_vocab(self, root: Path, key: str = "tokenizer") -> None:
        """The pad token is a token of the vocabulary the artifact ships (the runtime pads
        with its id); ``root`` is the artifact, its paths already checked."""
        path = root / self.vocab
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DifforgeError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise DifforgeError(f"{path} does not hold a JSON object")
        if self.pad_token not in (json_tokens(data) if self.type == "json" else data):
            raise DifforgeError(
                f"manifest.json: {key}.pad_token: {self.pad_token!r} is not in {self.vocab}"
            )


def json_tokens(data: dict[str, Any]) -> set[str]:
    """The tokens a tokenizer.json knows: its added tokens and its model's vocabulary (a
    token-to-id map for BPE and WordPiece, [token, score] pairs for Unigram)."""
    tokens = {t.get("content") for t in data.get("added_tokens") or [] if isinstance(t, dict)}
    vocab = (data.get("model") or {}).get("vocab") if isinstance(data.get("model"), dict) else None
    if isinstance(vocab, dict):
        tokens.update(vocab)
    elif isinstance(vocab, list):
        tokens.update(v[0] for v in vocab if isinstance(v, list) and v)
    return {t for t in tokens if isinstance(t, str)}
