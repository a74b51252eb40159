"""The torch-free CLIP tokenizer against transformers' CLIPTokenizer, token for token, padding
with end-of-text (SD 1.x) and with "!" (SD 2.x, SD-Turbo)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from difforge.errors import DifforgeError
from difforge.runtime.tokenizer import EOS, CLIPTokenizer
from difforge.sources.presets import VOCAB_DIR

PADS = (EOS, "!")


def _ours(pad_token: str) -> CLIPTokenizer:
    return CLIPTokenizer(VOCAB_DIR / "vocab.json", VOCAB_DIR / "merges.txt", 77, pad_token)


def _theirs(pad_token: str) -> object:
    from tests.reference_pipelines import clip_tokenizer

    return clip_tokenizer(pad_token)


def _theirs_ids(tok: object, prompts: list[str]) -> np.ndarray:
    enc = tok(prompts, padding="max_length", max_length=77, truncation=True)  # type: ignore[operator]
    return np.asarray(enc.input_ids)


@pytest.fixture(scope="module")
def pairs() -> dict[str, tuple[CLIPTokenizer, object]]:
    return {pad: (_ours(pad), _theirs(pad)) for pad in PADS}


@pytest.mark.parametrize("pad", PADS)
@pytest.mark.parametrize(
    "prompt",
    [
        "a photo of a cat",
        "",
        "A  CASTLE\ton the hill's 42 towers!!",
        "naïve café — “quotes” ½ ²",
        "word " * 100,
        "word " * 80 + "!",
        "<|endoftext|> inside",
        ":\U00031350 x\U0002ebf0",  # CJK Extensions H and I: newer than unicodedata
        # special tokens are split out of the raw prompt, before anything else
        "wow!! what?! a!b !",
        "?<|endoftext|>x<|startoftext|>!",
        # an upper-cased special token is text, cut again by the byte-level step
        "<|ENDOFTEXT|>> a<|StartOfText|>",
    ],
)
def test_matches_transformers(
    pairs: dict[str, tuple[CLIPTokenizer, object]], pad: str, prompt: str
) -> None:
    ours, theirs = pairs[pad]
    np.testing.assert_array_equal(ours([prompt]), _theirs_ids(theirs, [prompt]))


def test_pads_with_the_models_pad_token(pairs: dict[str, tuple[CLIPTokenizer, object]]) -> None:
    """Not vacuous: the two pads give different ids, each transformers' own pad id."""
    for pad in PADS:
        ours, theirs = pairs[pad]
        assert ours.pad_id == theirs.pad_token_id  # type: ignore[attr-defined]
        row = ours(["a cat"])[0]
        assert list(row[4:]) == [ours.pad_id] * 73 and row[3] == ours.eos_id
    assert pairs["!"][0].pad_id != pairs[EOS][0].pad_id


def test_a_pad_token_outside_the_vocabulary_is_refused() -> None:
    with pytest.raises(DifforgeError, match=r"vocab\.json has no token '<pad>'") as err:
        _ours("<pad>")
    assert "\n" not in str(err.value)


def test_a_vocabulary_without_the_special_tokens_is_refused(tmp_path: Path) -> None:
    (tmp_path / "vocab.json").write_text('{"a</w>": 0}')
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(DifforgeError, match=re.escape("has no token '<|startoftext|>'")):
        CLIPTokenizer(tmp_path / "vocab.json", tmp_path / "merges.txt")
    (tmp_path / "vocab.json").write_text("[1, 2]")
    with pytest.raises(DifforgeError, match="does not hold a JSON object"):
        CLIPTokenizer(tmp_path / "vocab.json", tmp_path / "merges.txt")


# Code points this Python's Unicode database does not know may be classified differently by
# the newer tables behind transformers' tokenizer; the known newer ideograph blocks are
# handled and tested explicitly above.
_KNOWN = st.characters(exclude_categories=("Cn", "Cs"))
# Text with the special tokens (and "!") often in it, next to anything.
_TEXT = st.lists(
    st.one_of(
        st.text(_KNOWN, max_size=12),
        st.sampled_from(["!", "?!", " ", "<|endoftext|>", "<|startoftext|>", "<|ENDOFTEXT|>"]),
    ),
    max_size=6,
).map("".join)

_HF: dict[str, object] = {}


@settings(max_examples=60, deadline=None)
@given(_TEXT, st.sampled_from(PADS))
def test_matches_transformers_on_any_text(text: str, pad: str) -> None:
    if pad not in _HF:
        _HF[pad] = (_ours(pad), _theirs(pad))
    ours, theirs = _HF[pad]  # type: ignore[misc]
    np.testing.assert_array_equal(ours([text]), _theirs_ids(theirs, [text]))
