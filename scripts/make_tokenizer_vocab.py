"""Build the small CLIP-format BPE vocabulary that the presets ship.

The presets need a real CLIP tokenizer (so that `transformers.CLIPTokenizer` and difforge's
torch-free tokenizer can be checked against each other) but not a 49k-token vocabulary.
This learns a few hundred byte-level BPE merges from a short prompt corpus, in CLIP's
layout: 256 byte symbols, the same with ``</w>``, the merges, then the two special tokens.

Run: python scripts/make_tokenizer_vocab.py difforge/export/sources/vocab
"""

from __future__ import annotations

import collections
import itertools
import json
import sys
from pathlib import Path

from difforge.runtime.tokenizer import _bytes_to_unicode

CORPUS = [
    "a",
    "photo",
    "of",
    "a",
    "cat",
    "sitting",
    "on",
    "a",
    "red",
    "chair",
    "in",
    "the",
    "garden,",
    "high",
    "resolution,",
    "detailed",
    "an",
    "oil",
    "painting",
    "of",
    "a",
    "mountain",
    "lake",
    "at",
    "sunset",
    "with",
    "pine",
    "trees",
    "and",
    "a",
    "wooden",
    "boat",
    "a",
    "portrait",
    "of",
    "an",
    "astronaut",
    "riding",
    "a",
    "horse",
    "on",
    "the",
    "moon,",
    "digital",
    "art,",
    "trending",
    "a",
    "small",
    "house",
    "by",
    "the",
    "sea",
    "under",
    "a",
    "blue",
    "sky",
    "with",
    "white",
    "clouds,",
    "watercolor",
    "the",
    "city",
    "at",
    "night",
    "with",
    "neon",
    "lights",
    "and",
    "rain",
    "on",
    "the",
    "street,",
    "cinematic",
    "lighting",
    "a",
    "bowl",
    "of",
    "fruit",
    "on",
    "a",
    "table",
    "next",
    "to",
    "a",
    "window,",
    "still",
    "life,",
    "soft",
    "light",
    "a",
    "dog",
    "running",
    "through",
    "a",
    "field",
    "of",
    "flowers",
    "in",
    "spring,",
    "photograph,",
    "sharp",
    "focus",
    "a",
    "castle",
    "on",
    "a",
    "hill",
    "in",
    "the",
    "fog,",
    "fantasy",
    "landscape,",
    "concept",
    "art,",
    "highly",
    "detailed",
    "handwritten",
    "digit",
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "a",
    "robot",
    "reading",
    "a",
    "book",
    "in",
    "a",
    "library,",
    "studio",
    "lighting,",
    "4k,",
    "octane",
    "render",
]

NUM_MERGES = 400


def main(out_dir: str) -> None:
    enc = _bytes_to_unicode()
    words = collections.Counter(
        (*tuple(enc[b] for b in w.encode("utf-8")[:-1]), enc[w.encode("utf-8")[-1]] + "</w>")
        for w in (w.lower().strip(",.") for w in CORPUS)
        if w
    )
    merges: list[tuple[str, str]] = []
    for _ in range(NUM_MERGES):
        pairs: collections.Counter[tuple[str, str]] = collections.Counter()
        for word, count in words.items():
            for a, b in itertools.pairwise(word):
                pairs[(a, b)] += count
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        merged: collections.Counter[tuple[str, ...]] = collections.Counter()
        for word, count in words.items():
            out: list[str] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    vocab_list = list(enc.values())
    vocab_list += [v + "</w>" for v in vocab_list]
    vocab_list += ["".join(m) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (out / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(vocab)} tokens, {len(merges)} merges -> {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "difforge/export/sources/vocab")
