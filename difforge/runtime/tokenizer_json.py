"""FLUX's second tokenizer (T5's SentencePiece Unigram) read from a ``tokenizer.json``.

The runtime stays torch- and transformers-free: the ids come from Hugging Face's Rust
``tokenizers`` library (imported only when a tokenizer is built), and must equal what
diffusers' FluxPipeline feeds T5, ``tokenizer_2(prompts, padding="max_length",
max_length=max_sequence_length, truncation=True).input_ids``: the prompt's tokens cut to
``max_length - 1``, ``</s>``, then the pad token's id up to ``max_length``.

The file's model (vocabulary and scores) and its added tokens are used as saved, but the rest
of the pipeline is set here, as transformers 5's ``T5Tokenizer`` sets it when it loads the same
file: the normalizer is the file's SentencePiece ``Precompiled`` character map alone (none if
the file has none; the file's other normalizers are dropped), the text is split on whitespace
and each word prefixed with "▁" (``WhitespaceSplit`` then ``Metaspace``, which drops leading,
trailing and repeated whitespace as SentencePiece does), and ``</s>`` ends every sequence.
Truncation and padding are set here too, never taken from the file. The file's own pipeline,
run as saved (as transformers 4's ``T5TokenizerFast`` ran it), can differ on whitespace: a
trailing space or newline, or a space before an added token, gives it an extra "▁" token.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from difforge.errors import DifforgeError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

#: the token T5 ends every sequence with
EOS = "</s>"
#: the pad token of T5 tokenizers
PAD = "<pad>"
#: SentencePiece's word-start marker
METASPACE = "▁"


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _charsmap(path: Path, data: Any) -> bytes | None:
    """The SentencePiece ``Precompiled`` character map among the file's normalizers (the
    first, as transformers takes it), decoded; None without one."""
    normalizer = data.get("normalizer") if isinstance(data, dict) else None
    if not isinstance(normalizer, dict):
        return None
    found = normalizer.get("normalizers") if normalizer.get("type") == "Sequence" else [normalizer]
    for item in found if isinstance(found, list) else []:
        if isinstance(item, dict) and item.get("type") == "Precompiled":
            try:
                return base64.b64decode(item.get("precompiled_charsmap") or "")
            except (binascii.Error, TypeError, ValueError) as exc:
                raise DifforgeError(
                    f"{path}: the normalizer's precompiled_charsmap is not base64: {_one_line(exc)}"
                ) from None
    return None


class JsonTokenizer:
    """Tokenize prompts into padded int64 id arrays, as FluxPipeline does for T5."""

    def __init__(self, path: Path, max_length: int, pad_token: str) -> None:
        try:
            from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
            from tokenizers.models import Unigram
        except ImportError:
            raise DifforgeError(
                "reading a T5 tokenizer.json needs the tokenizers package: pip install tokenizers"
            ) from None
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise DifforgeError(
                f"{path}: the T5 window must be at least 2 tokens, not {max_length}"
            )
        try:
            text = path.read_text(encoding="utf-8")
            charsmap = _charsmap(path, json.loads(text))
            tok = Tokenizer.from_str(text)
            precompiled = None if charsmap is None else normalizers.Precompiled(charsmap)
        except DifforgeError:
            raise
        except Exception as exc:  # the Rust library raises plain Exceptions
            raise DifforgeError(f"cannot read the tokenizer {path}: {_one_line(exc)}") from None
        if not isinstance(tok.model, Unigram):
            kind = type(tok.model).__name__
            raise DifforgeError(f"{path} holds a {kind} tokenizer, not T5's Unigram")
        eos_id, pad_id = tok.token_to_id(EOS), tok.token_to_id(pad_token)
        if eos_id is None or pad_id is None:
            missing = EOS if eos_id is None else pad_token
            raise DifforgeError(f"{path} has no token {missing!r}")
        self.path = path
        self.max_length = max_length
        self.pad_token = pad_token
        self.eos_id: int = eos_id
        self.pad_id: int = pad_id

        tok.normalizer = precompiled
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.WhitespaceSplit(),
                pre_tokenizers.Metaspace(
                    replacement=METASPACE, prepend_scheme="always", split=True
                ),
            ]
        )
        tok.post_processor = processors.TemplateProcessing(
            single=["$A", EOS], pair=["$A", EOS, "$B", EOS], special_tokens=[(EOS, self.eos_id)]
        )
        tok.encode_special_tokens = False  # added tokens typed in a prompt are those tokens
        tok.no_truncation()
        tok.no_padding()
        # Two copies: one untruncated, to count what the window cuts (``dropped``), and one
        # that cuts and pads as transformers asks the library to.
        self._plain: Tokenizer = tok
        self._window: Tokenizer = Tokenizer.from_str(tok.to_str())
        self._window.enable_truncation(
            max_length, stride=0, strategy="longest_first", direction="right"
        )
        self._window.enable_padding(
            direction="right",
            pad_id=self.pad_id,
            pad_type_id=0,
            pad_token=pad_token,
            length=max_length,
            pad_to_multiple_of=None,
        )

    def encode(self, text: str) -> list[int]:
        """The ids of ``text`` alone: no ``</s>``, no truncation, no padding."""
        ids: list[int] = self._plain.encode(text, add_special_tokens=False).ids
        return ids

    def dropped(self, text: str) -> int:
        """Tokens of ``text`` past the encoder's window (cut, as diffusers cuts them)."""
        return max(0, len(self.encode(text)) - (self.max_length - 1))

    def __call__(self, texts: list[str]) -> np.ndarray:
        """One row of ``max_length`` ids per text: its tokens, ``</s>``, then pad ids."""
        rows = [e.ids for e in self._window.encode_batch(list(texts), add_special_tokens=True)]
        return np.asarray(rows, dtype=np.int64).reshape(len(rows), self.max_length)
