"""Conditioning: prompts through the tokenizer and text encoder, or class labels, laid out
the way the denoiser takes them under classifier-free guidance."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from difforge.artifact.manifest import Manifest
from difforge.errors import DifforgeError
from difforge.runtime.request import ResolvedRequest
from difforge.runtime.runners.base import Runner
from difforge.runtime.tokenizer import CLIPTokenizer


class Conditioner:
    """Builds the denoiser's conditioning inputs for a resolved request."""

    def __init__(self, root: Path, manifest: Manifest, runners: dict[str, Runner]) -> None:
        self.pipeline = manifest.pipeline
        self.runners = runners
        self.tokenizer: CLIPTokenizer | None = None
        if manifest.pipeline.text_conditioned:
            tok = manifest.tokenizer
            if tok is None:
                raise DifforgeError(
                    f"manifest.json: tokenizer: missing (a {self.pipeline.type} artifact needs one)"
                )
            self.tokenizer = CLIPTokenizer(
                root / tok.vocab, root / tok.merges, tok.max_length, tok.pad_token
            )

    def prompt_notes(self, prompts: list[str], negative_prompt: str) -> list[str]:
        """What the user should know about the prompts: the text encoder reads a fixed window
        of tokens and drops the rest (diffusers warns of the same)."""
        if self.tokenizer is None:
            return []
        window = self.tokenizer.max_length - 2
        notes = []
        for what, text in [("prompt", p) for p in prompts] + [("negative prompt", negative_prompt)]:
            dropped = self.tokenizer.dropped(text)
            if dropped:
                notes.append(
                    f"the {what} is {window + dropped} tokens; the text encoder reads the first "
                    f"{window}, the last {dropped} are ignored"
                )
        return list(dict.fromkeys(notes))  # one note for a prompt repeated per image

    def __call__(self, req: ResolvedRequest) -> dict[str, np.ndarray]:
        """Text: [negative..., prompts...] (diffusers' order); classes: [labels..., null...]
        (DiT's order); a guidance-distilled model gets the scale as an input instead."""
        if self.pipeline.text_conditioned:
            assert self.tokenizer is not None  # made in __init__ for text artifacts
            texts = ([req.negative_prompt] * len(req.prompts) if req.cfg else []) + req.prompts
            out = self.runners["text_encoder"].infer({"input_ids": self.tokenizer(texts)})
            cond = {"encoder_hidden_states": out["last_hidden_state"]}
            if self.pipeline.type == "flux":
                cond["pooled_projections"] = out["pooler_output"]
        else:
            null = [self.pipeline.null_class] * len(req.labels)
            labels = req.labels + (null if req.cfg else [])
            cond = {"class_labels": np.asarray(labels, dtype=np.int64)}
        if self.pipeline.guidance_input:
            cond["guidance"] = np.full((req.batch,), req.guidance_scale, dtype=np.float32)
        return cond
