"""The torch-free CLIP tokenizer against transformers' CLIPTokenizer, token for token."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from difforge.runtime.tokenizer import CLIPTokenizer
from difforge.sources.presets import VOCAB_DIR


@pytest.fixture(scope="module")
def pair() -> tuple[CLIPTokenizer, object]:
    from transformers import CLIPTokenizer as HFTokenizer

    ours = CLIPTokenizer(VOCAB_DIR / "vocab.json", VOCAB_DIR / "merges.txt", 77)
    theirs = HFTokenizer(
        str(VOCAB_DIR / "vocab.json"), str(VOCAB_DIR / "merges.txt"), model_max_length=77
    )
    return ours, theirs


def _theirs(tok: object, prompts: list[str]) -> np.ndarray:
    enc = tok(prompts, padding="max_length", max_length=77, truncation=True)  # type: ignore[operator]
    return np.asarray(enc.input_ids)


@pytest.mark.parametrize(
    "prompt",
    [
        "a photo of a cat",
        "",
        "A  CASTLE\ton the hill's 42 towers!!",
        "naïve café — “quotes” ½ ²",
        "word " * 100,
        "<|endoftext|> inside",
        ":\U00031350 x\U0002ebf0",  # CJK Extensions H and I: newer than unicodedata
    ],
)
def test_matches_transformers(pair: tuple[CLIPTokenizer, object], prompt: str) -> None:
    ours, theirs = pair
    np.testing.assert_array_equal(ours([prompt]), _theirs(theirs, [prompt]))


# Code points this Python's Unicode database does not know may be classified differently by
# the newer tables behind transformers' tokenizer; the known newer ideograph blocks are
# handled and tested explicitly above.
_KNOWN = st.characters(exclude_categories=("Cn", "Cs"))


@settings(max_examples=60, deadline=None)
@given(st.text(_KNOWN, max_size=40))
def test_matches_transformers_on_any_text(text: str) -> None:
    from transformers import CLIPTokenizer as HFTokenizer

    ours = CLIPTokenizer(VOCAB_DIR / "vocab.json", VOCAB_DIR / "merges.txt", 77)
    theirs = _cached_hf(HFTokenizer)
    np.testing.assert_array_equal(ours([text]), _theirs(theirs, [text]))


_HF: dict[str, object] = {}


def _cached_hf(cls: type) -> object:
    if "tok" not in _HF:
        _HF["tok"] = cls(
            str(VOCAB_DIR / "vocab.json"), str(VOCAB_DIR / "merges.txt"), model_max_length=77
        )
    return _HF["tok"]
