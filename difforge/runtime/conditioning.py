"""Conditioning: prompts through the tokenizers and text encoders, or class labels, laid out
the way the denoiser takes them under classifier-free guidance, one function per pipeline
type (each follows its diffusers pipeline's ``encode_prompt``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from difforge.artifact.manifest import Manifest
from difforge.artifact.sections import TokenizerSection
from difforge.errors import DifforgeError
from difforge.runtime.request import ResolvedRequest
from difforge.runtime.runners.base import Runner
from difforge.runtime.tokenizer import CLIPTokenizer

Feeds = dict[str, np.ndarray]


class Tokenizer(Protocol):
    max_length: int

    def __call__(self, texts: list[str], /) -> np.ndarray: ...

    def dropped(self, text: str, /) -> int: ...


def make_tokenizer(root: Path, section: TokenizerSection) -> Tokenizer:
    """CLIP's BPE pair, or a tokenizer.json (T5) through the ``tokenizers`` library."""
    if section.type == "json":
        from difforge.runtime.tokenizer_json import JsonTokenizer

        return JsonTokenizer(root / section.vocab, section.max_length, section.pad_token)
    return CLIPTokenizer(
        root / section.vocab, root / section.merges, section.max_length, section.pad_token
    )


class Conditioner:
    """Builds the denoiser's conditioning inputs for a resolved request."""

    def __init__(self, root: Path, manifest: Manifest, runners: dict[str, Runner]) -> None:
        self.pipeline = manifest.pipeline
        self.runners = runners
        self.tokenizer: Tokenizer | None = None
        self.tokenizer_2: Tokenizer | None = None
        if manifest.pipeline.text_conditioned:
            if manifest.tokenizer is None:
                raise DifforgeError(
                    f"manifest.json: tokenizer: missing (a {self.pipeline.type} artifact needs one)"
                )
            self.tokenizer = make_tokenizer(root, manifest.tokenizer)
        if manifest.tokenizer_2 is not None:
            self.tokenizer_2 = make_tokenizer(root, manifest.tokenizer_2)

    def prompt_notes(self, prompts: list[str], negative_prompt: str) -> list[str]:
        """What the user should know about the prompts: each text encoder reads a fixed window
        of tokens and drops the rest (diffusers warns of the same)."""
        readers: list[tuple[str, Tokenizer | None]] = [("the text encoder", self.tokenizer)]
        if self.tokenizer is not None and self.tokenizer_2 is not None:
            readers = (
                [("the text encoders", self.tokenizer)]  # SDXL: one window for both
                if self.tokenizer_2.max_length == self.tokenizer.max_length
                else [("text_encoder (CLIP)", self.tokenizer), ("text_encoder_2", self.tokenizer_2)]
            )
        notes = []
        texts = [("prompt", p) for p in prompts] + [("negative prompt", negative_prompt)]
        for reader, tok in readers:
            if tok is None:
                continue
            window = tok.max_length - (2 if isinstance(tok, CLIPTokenizer) else 1)
            for what, text in texts:
                dropped = tok.dropped(text)
                if dropped:
                    notes.append(
                        f"the {what} is {window + dropped} tokens; {reader} reads the first "
                        f"{window}, the last {dropped} are ignored"
                    )
        return list(dict.fromkeys(notes))  # one note for a prompt repeated per image

    def __call__(self, req: ResolvedRequest) -> Feeds:
        """The denoiser's conditioning inputs; a guidance-distilled model gets the scale as
        an input instead of running classifier-free guidance."""
        cond = ENCODERS[self.pipeline.type](self, req)
        if self.pipeline.guidance_input:
            cond["guidance"] = np.full((req.batch,), req.guidance_scale, dtype=np.float32)
        return cond

    def encode(self, key: str, tok: Tokenizer | None, texts: list[str]) -> Feeds:
        assert tok is not None  # made in __init__ for the artifacts that have the encoder
        return self.runners[key].infer({"input_ids": tok(texts)})


def _texts(req: ResolvedRequest) -> list[str]:
    """[negative..., prompts...]: diffusers' order under classifier-free guidance."""
    return ([req.negative_prompt] * len(req.prompts) if req.cfg else []) + req.prompts


def _stable_diffusion(c: Conditioner, req: ResolvedRequest) -> Feeds:
    out = c.encode("text_encoder", c.tokenizer, _texts(req))
    return {"encoder_hidden_states": out["last_hidden_state"]}


def _sdxl(c: Conditioner, req: ResolvedRequest) -> Feeds:
    """Both encoders' penultimate states side by side, the second's pooled embedding, and
    ``add_time_ids`` (original size, crop corner (0, 0), target size: the request's size).
    Without a negative prompt, ``force_zeros_for_empty_prompt`` models guide against zeros."""
    zeros = req.cfg and c.pipeline.zero_negative and not req.negative_prompt
    texts = req.prompts if zeros else _texts(req)
    first = c.encode("text_encoder", c.tokenizer, texts)["hidden_states"]
    second = c.encode("text_encoder_2", c.tokenizer_2, texts)
    states = np.concatenate([first, second["hidden_states"]], axis=-1)
    pooled = second["text_embeds"]
    if zeros:
        states = np.concatenate([np.zeros_like(states), states])
        pooled = np.concatenate([np.zeros_like(pooled), pooled])
    size = [req.height, req.width]
    time_ids = np.tile(np.asarray([*size, 0, 0, *size], np.float32), (len(states), 1))
    return {"encoder_hidden_states": states, "text_embeds": pooled, "time_ids": time_ids}


def _flux(c: Conditioner, req: ResolvedRequest) -> Feeds:
    """CLIP's pooled output and T5's token states (a model without T5: CLIP's states)."""
    clip = c.encode("text_encoder", c.tokenizer, req.prompts)
    if c.tokenizer_2 is None:
        states = clip["last_hidden_state"]
    else:
        states = c.encode("text_encoder_2", c.tokenizer_2, req.prompts)["last_hidden_state"]
    return {"encoder_hidden_states": states, "pooled_projections": clip["pooler_output"]}


def _classes(c: Conditioner, req: ResolvedRequest) -> Feeds:
    """[labels..., null...]: DiT's order under classifier-free guidance."""
    null = [c.pipeline.null_class] * len(req.labels)
    labels = req.labels + (null if req.cfg else [])
    return {"class_labels": np.asarray(labels, dtype=np.int64)}


ENCODERS: dict[str, Callable[[Conditioner, ResolvedRequest], Feeds]] = {
    "text-to-image": _stable_diffusion,
    "sdxl": _sdxl,
    "flux": _flux,
    "class-to-image": _classes,
}
