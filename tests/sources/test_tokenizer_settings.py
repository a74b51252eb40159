"""A folder's pad token and window, read as transformers' ``from_pretrained`` reads them (the
special tokens map over the config unless the config lists its added tokens), and the
runtime's token ids for that folder equal transformers' own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from difforge.errors import DifforgeError
from difforge.runtime.tokenizer import CLIPTokenizer
from difforge.sources.presets import VOCAB_DIR
from difforge.sources.tokenizer import (
    DEFAULT_MAX_LENGTH,
    check_clip_tokenizer,
    read_settings,
    write_clip_tokenizer,
)

EOS = "<|endoftext|>"
PROMPTS = ["a photo of a cat", "wow!! a red?! boat !", "word " * 90]


def _added(content: str, typed: bool = True) -> dict[str, Any]:
    token = {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
             "single_word": False}
    return {"__type": "AddedToken", **token} if typed else token


# (name, tokenizer_config.json, special_tokens_map.json); None: the file is absent
LAYOUTS: list[tuple[str, Any, Any]] = [
    # SD 2.x / SD-Turbo: the config says end-of-text, the (legacy) map says "!", the map wins
    ("sd2", {"pad_token": EOS, "model_max_length": 77}, {"pad_token": "!"}),
    ("sd2-added-tokens", {"pad_token": _added(EOS), "model_max_length": 77},
     {"pad_token": _added("!", typed=False)}),
    # transformers >= 4.34 lists its added tokens in the config: the map is not read
    ("modern", {"pad_token": "!", "model_max_length": 77,
                "added_tokens_decoder": {"0": {**_added("!", typed=False), "special": True}}},
     {"pad_token": EOS}),
    ("config-only", {"pad_token": _added("!"), "model_max_length": 77}, None),
    ("map-only", None, {"pad_token": "!"}),
    ("sd1", {"model_max_length": 77}, {"pad_token": EOS}),
    ("nothing", None, None),
]


def _folder(root: Path, config: Any, special: Any) -> Path:
    root.mkdir(parents=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(VOCAB_DIR / name, root / name)
    if config is not None:
        (root / "tokenizer_config.json").write_text(json.dumps(config))
    if special is not None:
        (root / "special_tokens_map.json").write_text(json.dumps(special))
    return root


def _hf(folder: Path) -> Any:
    from transformers import CLIPTokenizer as HFTokenizer

    return HFTokenizer.from_pretrained(str(folder))


def _compare(folder: Path, tmp_path: Path) -> str:
    """The runtime, on the files export writes, against transformers on the folder."""
    theirs = _hf(folder)
    settings = write_clip_tokenizer(folder, tmp_path / "written")
    assert settings.pad_token == theirs.pad_token
    if theirs.model_max_length < 1 << 20:  # transformers' "unset" is a huge number
        assert settings.max_length == theirs.model_max_length
    else:
        assert settings.max_length == DEFAULT_MAX_LENGTH
    ours = CLIPTokenizer(
        tmp_path / "written" / "vocab.json",
        tmp_path / "written" / "merges.txt",
        settings.max_length,
        settings.pad_token,
    )
    expected = theirs(PROMPTS, padding="max_length", max_length=77, truncation=True).input_ids
    np.testing.assert_array_equal(ours(PROMPTS), np.asarray(expected))
    return settings.pad_token


@pytest.mark.parametrize(("name", "config", "special"), LAYOUTS, ids=[x[0] for x in LAYOUTS])
def test_read_as_transformers_reads_it(
    tmp_path: Path, name: str, config: Any, special: Any
) -> None:
    pad = _compare(_folder(tmp_path / name, config, special), tmp_path)
    assert pad == (EOS if name in ("sd1", "nothing") else "!")  # the layouts really differ


def test_a_folder_saved_by_transformers_5(tmp_path: Path) -> None:
    """tokenizer.json and tokenizer_config.json only, as transformers 5 saves a tokenizer."""
    from tests.reference_pipelines import clip_tokenizer

    clip_tokenizer("!").save_pretrained(str(tmp_path / "saved"))
    assert not (tmp_path / "saved" / "vocab.json").exists()
    assert _compare(tmp_path / "saved", tmp_path) == "!"


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"pad_token": "<pad>"}, r"the pad token '<pad>' is not in the vocabulary"),
        ({"pad_token": 3}, r"tokenizer_config\.json: pad_token: expected a token"),
        ({"pad_token": {"lstrip": False}}, r"pad_token: expected a token"),
        ({"model_max_length": "77"}, r"model_max_length: expected an integer"),
    ],
)
def test_a_bad_tokenizer_is_refused_in_one_line(
    tmp_path: Path, config: dict[str, Any], match: str
) -> None:
    folder = _folder(tmp_path / "tok", config, None)
    with pytest.raises(DifforgeError, match=match) as err:
        check_clip_tokenizer(folder)
    assert "\n" not in str(err.value)


def test_the_map_is_named_when_it_is_wrong(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "tok", {"pad_token": EOS}, {"pad_token": ["!"]})
    with pytest.raises(DifforgeError, match=r"special_tokens_map\.json: pad_token: expected"):
        read_settings(folder)
