"""CLIP's byte-level BPE tokenizer without transformers, tokenizers or regex.

The runtime must install with numpy and onnxruntime alone, so this re-implements exactly what
``transformers.CLIPTokenizer`` does with a ``vocab.json``/``merges.txt`` pair: NFC, whitespace
folding and lower-casing; CLIP's pre-tokenising pattern (specials, contractions, letter runs,
single numbers, runs of other symbols); byte-to-unicode mapping; BPE with ``</w>`` on the last
symbol; BOS/EOS, truncation and padding to ``max_length``. A test checks it token-for-token
against transformers.

Special tokens (BOS, EOS and the pad token) are split out of the raw prompt before anything
else, as transformers splits its added special tokens: with SD 2.x's pad token "!", every "!"
in a prompt is the pad token's id, not BPE's "!</w>". The pad token is the model's (SD 2.x
and SD-Turbo pad with "!"); end-of-text when the artifact names none.
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

import numpy as np

from difforge.errors import DifforgeError

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
_SPECIALS = (BOS, EOS)
# What CLIP's pattern cuts out as one piece, the byte-level step after it (GPT-2's pattern in
# transformers' tokenizer) cuts again: "<|", the word, "|>". Only an upper-cased special
# token reaches the pattern (the special tokens themselves are split out before).
_SPECIAL_PIECES = {s: ["<|", s[2:-2], "|>"] for s in _SPECIALS}
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
# Unicode White_Space, as the Rust regex behind transformers' tokenizer defines \s (Python's
# str.isspace() also counts the \x1c-\x1f separators, which would split tokens differently).
_SPACE_CHARS = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_SPACES = frozenset(_SPACE_CHARS)
# CJK ideograph blocks newer than Python 3.10's Unicode tables (Extensions H and I, Unicode
# 15 and 15.1): unassigned to unicodedata, letters to the Rust regex transformers uses.
_NEWER_IDEOGRAPHS = ((0x31350, 0x323AF), (0x2EBF0, 0x2EE5D))
_WHITESPACE = re.compile("[" + re.escape(_SPACE_CHARS) + "]+")


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def _kind(ch: str) -> str:
    cat = unicodedata.category(ch)
    if cat[0] == "L":
        return "L"
    if cat == "Cn" and any(lo <= ord(ch) <= hi for lo, hi in _NEWER_IDEOGRAPHS):
        return "L"
    if cat[0] == "N":
        return "N"
    if ch in _SPACES:
        return "S"
    return "P"


def _split_specials(text: str, specials: tuple[str, ...]) -> list[tuple[str, bool]]:
    """``text`` cut around each special token (leftmost, then longest, as transformers' added
    tokens are matched), each part paired with whether it is a special token."""
    parts: list[tuple[str, bool]] = []
    start = i = 0
    while i < len(text):
        found = max((s for s in specials if text.startswith(s, i)), key=len, default=None)
        if found is None:
            i += 1
            continue
        if i > start:
            parts.append((text[start:i], False))
        parts.append((found, True))
        i = start = i + len(found)
    if start < len(text):
        parts.append((text[start:], False))
    return parts


def _pre_tokenize(text: str) -> list[str]:
    # The same alternation, in the same order, as CLIP's regex; whitespace matches nothing.
    pieces: list[str] = []
    i, n = 0, len(text)
    while i < n:
        special = next((s for s in _SPECIALS if text.startswith(s, i)), None)
        if special:
            pieces.extend(_SPECIAL_PIECES[special])
            i += len(special)
            continue
        contraction = next((c for c in _CONTRACTIONS if text.startswith(c, i)), None)
        if contraction:
            pieces.append(contraction)
            i += len(contraction)
            continue
        kind = _kind(text[i])
        if kind == "S":
            i += 1
        elif kind == "N":
            pieces.append(text[i])
            i += 1
        else:
            j = i + 1
            while j < n and _kind(text[j]) == kind:
                j += 1
            pieces.append(text[i:j])
            i = j
    return pieces


class CLIPTokenizer:
    """Tokenize prompts into padded int64 id arrays, as the SD pipelines do."""

    def __init__(
        self, vocab_file: Path, merges_file: Path, max_length: int = 77, pad_token: str = EOS
    ) -> None:
        try:
            self.vocab: dict[str, int] = json.loads(vocab_file.read_text(encoding="utf-8"))
            lines = merges_file.read_text(encoding="utf-8").splitlines()
        except (OSError, ValueError) as exc:
            raise DifforgeError(
                f"cannot read the tokenizer files in {vocab_file.parent}: {exc}"
            ) from None
        merges = [tuple(line.split()) for line in lines if line and not line.startswith("#")]
        self.ranks = {m: r for r, m in enumerate(merges) if len(m) == 2}
        self.max_length = max_length
        self.specials = tuple(dict.fromkeys((BOS, EOS, pad_token)))
        if not isinstance(self.vocab, dict):
            raise DifforgeError(f"{vocab_file} does not hold a JSON object")
        missing = [s for s in self.specials if s not in self.vocab]
        if missing:
            raise DifforgeError(f"{vocab_file} has no token {missing[0]!r}")
        self.bos_id = self.vocab[BOS]
        self.eos_id = self.vocab[EOS]
        self.pad_token = pad_token
        self.pad_id = self.vocab[pad_token]
        self._byte_encoder = _bytes_to_unicode()
        self._cache: dict[str, list[str]] = {}

    def _bpe(self, token: str) -> list[str]:
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        word = [*token[:-1], token[-1] + "</w>"]
        while len(word) > 1:
            pairs = [(word[i], word[i + 1]) for i in range(len(word) - 1)]
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self._cache[token] = word
        return word

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for part, special in _split_specials(text, self.specials):
            if special:
                ids.append(self.vocab[part])
                continue
            normalized = _WHITESPACE.sub(" ", unicodedata.normalize("NFC", part)).lower()
            for piece in _pre_tokenize(normalized):
                mapped = "".join(self._byte_encoder[b] for b in piece.encode("utf-8"))
                ids.extend(self.vocab.get(sym, self.eos_id) for sym in self._bpe(mapped))
        return ids

    def dropped(self, prompt: str) -> int:
        """Tokens of ``prompt`` past the encoder's window (cut, as diffusers cuts them)."""
        return max(0, len(self.encode(prompt)) - (self.max_length - 2))

    def __call__(self, prompts: list[str]) -> np.ndarray:
        rows = []
        for prompt in prompts:
            body = self.encode(prompt)[: self.max_length - 2]
            ids = [self.bos_id, *body, self.eos_id]
            ids += [self.pad_id] * (self.max_length - len(ids))
            rows.append(ids)
        return np.asarray(rows, dtype=np.int64)
