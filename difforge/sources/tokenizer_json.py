"""FLUX's T5 tokenizer as the runtime reads it: the fast tokenizer's ``tokenizer.json``, and the
pad token and window to record beside it.

The runtime (:class:`difforge.runtime.tokenizer_json.JsonTokenizer`) reads ``tokenizer.json``
through the Rust ``tokenizers`` library, so that file is copied into the artifact as is; a
folder holding only SentencePiece's ``spiece.model`` is refused, with the line that writes the
``tokenizer.json`` (difforge does not depend on ``sentencepiece`` to convert it).

The pad token and ``model_max_length`` are read as transformers' ``from_pretrained`` reads
them, with the CLIP side's helpers (:mod:`difforge.sources.tokenizer`): ``tokenizer_config.json``,
overridden by ``special_tokens_map.json`` unless the config lists its ``added_tokens_decoder``.
T5 pads with ``<pad>`` when neither names a pad token. Its window is ``model_max_length`` when
that is set to a real limit (FLUX's folders say 512); transformers writes a huge number (1e30)
for "no limit", and then the window is FluxPipeline's default ``max_sequence_length``, 512.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from difforge.artifact.sections import json_tokens
from difforge.errors import DifforgeError
from difforge.sources.folder_io import read_json
from difforge.sources.tokenizer import special_settings, special_token

#: T5's end and pad tokens (the runtime's tokenizer reads the same ones from the file)
EOS = "</s>"
PAD = "<pad>"

TOKENIZER_JSON = "tokenizer.json"
#: SentencePiece's model, which slow T5 tokenizers read and difforge does not
SPIECE_MODEL = "spiece.model"
#: FluxPipeline's default ``max_sequence_length``: the window when the folder sets none
DEFAULT_MAX_LENGTH = 512
#: at or above this, ``model_max_length`` means "no limit" (transformers writes int(1e30))
NO_LIMIT = 1 << 20


@dataclass(frozen=True)
class JsonTokenizerSettings:
    """What the runtime needs besides ``tokenizer.json``: the pad token and the window."""

    pad_token: str = PAD
    max_length: int = DEFAULT_MAX_LENGTH


def _max_length(value: Any, where: str) -> int:
    if value is None:
        return DEFAULT_MAX_LENGTH
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 2:
        raise DifforgeError(f"{where}: expected an integer of at least 2")
    if value >= NO_LIMIT:
        return DEFAULT_MAX_LENGTH
    if value != int(value):
        raise DifforgeError(f"{where}: expected an integer of at least 2")
    return int(value)


def _vocabulary(path: Path) -> set[str]:
    """The tokens of a Unigram ``tokenizer.json``: its pieces and its added tokens."""
    data = read_json(path)
    model = data.get("model")
    if not isinstance(model, dict) or model.get("type") != "Unigram":
        raise DifforgeError(f"{path} is not a Unigram (T5) tokenizer")
    if not isinstance(model.get("vocab"), list):
        raise DifforgeError(f"{path}: the Unigram vocabulary is not a list")
    return json_tokens(data)


def read_t5_tokenizer(folder: Path) -> JsonTokenizerSettings:
    """The pad token and window of the T5 tokenizer in ``folder``, once its ``tokenizer.json``
    is known to hold them (else a one-line error)."""
    path = folder / TOKENIZER_JSON
    if not path.is_file():
        has = f"holds only {SPIECE_MODEL}" if (folder / SPIECE_MODEL).is_file() else "has no"
        raise DifforgeError(
            f"{folder} {has} tokenizer.json; difforge needs the fast tokenizer's "
            "tokenizer.json: write it with transformers' "
            f"T5TokenizerFast.from_pretrained({str(folder)!r}).save_pretrained({str(folder)!r})"
        )
    config, where = special_settings(folder)
    pad_token = special_token(config, where, "pad_token", PAD)
    max_length = _max_length(config.get("model_max_length"), where.get("model_max_length", ""))
    vocabulary = _vocabulary(path)
    for token, role in ((pad_token, "pad"), (EOS, "end")):
        if token not in vocabulary:
            raise DifforgeError(
                f"{path}: the {role} token {token!r} is not in the vocabulary (the text "
                "encoder has no embedding for it)"
            )
    return JsonTokenizerSettings(pad_token, max_length)


def write_json_tokenizer(folder: Path, dest: Path) -> JsonTokenizerSettings:
    """``tokenizer.json`` copied from ``folder`` into the folder ``dest``, and the pad token
    and window to record beside it."""
    settings = read_t5_tokenizer(folder)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / TOKENIZER_JSON, dest / TOKENIZER_JSON)
    return settings
