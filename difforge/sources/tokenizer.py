"""CLIP tokenizer files as the runtime reads them: ``vocab.json`` and ``merges.txt``, and the
model's pad token and window.

A diffusers folder saved by transformers 5 holds only ``tokenizer.json``; the BPE vocabulary
and merges inside it are written out as the classic pair, straight into the artifact (no
temporary folder is left behind).

The pad token and ``model_max_length`` are read as transformers' ``from_pretrained`` reads
them: ``tokenizer_config.json``, overridden by ``special_tokens_map.json`` unless the config
lists its ``added_tokens_decoder`` (a folder saved by transformers 4.34 or later); a token is
a string or an AddedToken-like object with a ``"content"``. SD 2.x and SD-Turbo pad with "!"
this way (their config says end-of-text, their special tokens map says "!"). Without either,
CLIP pads with end-of-text and the window is 77 tokens.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from difforge.errors import DifforgeError

FILES = ("vocab.json", "merges.txt")
CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
END_OF_TEXT = "<|endoftext|>"
#: the window CLIP's text encoders read, when the folder does not say
DEFAULT_MAX_LENGTH = 77


@dataclass(frozen=True)
class TokenizerSettings:
    """What the runtime needs besides the vocabulary: the pad token and the window."""

    pad_token: str = END_OF_TEXT
    max_length: int = DEFAULT_MAX_LENGTH


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DifforgeError(f"cannot read {path}: {exc}") from None


def _object(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = _read_json(path)
    if not isinstance(data, dict):
        raise DifforgeError(f"{path} does not hold a JSON object")
    return data


def _bpe_model(tok: Path) -> dict[str, Any]:
    path = tok / "tokenizer.json"
    data = _read_json(path)
    model = data.get("model", {}) if isinstance(data, dict) else {}
    if not isinstance(model, dict) or model.get("type") != "BPE" or "vocab" not in model:
        raise DifforgeError(f"{path} is not a BPE (CLIP) tokenizer")
    return model


def _token(value: Any, where: str) -> str:
    """A special token as transformers reads it: a string, or an AddedToken's content."""
    content = value.get("content") if isinstance(value, dict) else value
    if not isinstance(content, str) or not content:
        raise DifforgeError(f"{where}: expected a token (a string, or an object with 'content')")
    return content


def special_settings(tok: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The tokenizer settings transformers' ``from_pretrained`` reads from ``tok`` (the config,
    overridden by the special tokens map unless the config lists its added tokens), and for
    each key where it came from (``file: key``), for errors."""
    config, origin = _object(tok / CONFIG), {}
    if "added_tokens_decoder" not in config:  # transformers' legacy path: the map wins
        special = _object(tok / SPECIAL_TOKENS_MAP)
        config = {**config, **special}
        origin = dict.fromkeys(special, SPECIAL_TOKENS_MAP)
    return config, {key: f"{tok / origin.get(key, CONFIG)}: {key}" for key in config}


def special_token(config: dict[str, Any], where: dict[str, str], key: str, default: str) -> str:
    """The special token ``key`` of :func:`special_settings`' config, or ``default``."""
    value = config.get(key)
    return default if value is None else _token(value, where[key])


def read_settings(tok: Path) -> TokenizerSettings:
    """The pad token and window ``transformers.CLIPTokenizer.from_pretrained(tok)`` uses."""
    config, where = special_settings(tok)
    pad_token = special_token(config, where, "pad_token", END_OF_TEXT)
    max_length = config.get("model_max_length")
    if max_length is None:
        max_length = DEFAULT_MAX_LENGTH
    elif isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 3:
        raise DifforgeError(f"{where['model_max_length']}: expected an integer of at least 3")
    return TokenizerSettings(pad_token, max_length)


def _has_pair(tok: Path) -> bool:
    return all((tok / name).is_file() for name in FILES)


def _vocab(tok: Path) -> dict[str, Any]:
    vocab = _read_json(tok / FILES[0]) if _has_pair(tok) else _bpe_model(tok)["vocab"]
    if not isinstance(vocab, dict):
        raise DifforgeError(f"{tok}: the vocabulary is not a JSON object")
    return vocab


def check_clip_tokenizer(tok: Path) -> TokenizerSettings:
    """The settings of the CLIP tokenizer in ``tok``, if difforge can write it out (its pad
    token a token of its vocabulary), else a one-line error."""
    if not _has_pair(tok) and not (tok / "tokenizer.json").is_file():
        raise DifforgeError(
            f"{tok} holds no CLIP tokenizer (vocab.json + merges.txt or tokenizer.json)"
        )
    settings = read_settings(tok)
    if settings.pad_token not in _vocab(tok):
        raise DifforgeError(
            f"{tok}: the pad token {settings.pad_token!r} is not in the vocabulary (the text "
            "encoder has no embedding for it)"
        )
    return settings


def write_clip_tokenizer(tok: Path, dest: Path) -> TokenizerSettings:
    """``vocab.json`` and ``merges.txt`` in ``dest``, copied or converted from ``tok``, and the
    pad token and window to record beside them."""
    settings = check_clip_tokenizer(tok)
    dest.mkdir(parents=True, exist_ok=True)
    if _has_pair(tok):
        for name in FILES:
            shutil.copyfile(tok / name, dest / name)
        return settings
    model = _bpe_model(tok)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    (dest / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False), "utf-8")
    (dest / "merges.txt").write_text("\n".join(["#version: 0.2", *merges]) + "\n", "utf-8")
    return settings
