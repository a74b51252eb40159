"""CLIP tokenizer files as the runtime reads them: ``vocab.json`` and ``merges.txt``.

A diffusers folder saved by transformers 5 holds only ``tokenizer.json``; the BPE vocabulary
and merges inside it are written out as the classic pair, straight into the artifact (no
temporary folder is left behind).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from difforge.errors import DifforgeError

FILES = ("vocab.json", "merges.txt")


def _bpe_model(tok: Path) -> dict[str, Any]:
    path = tok / "tokenizer.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DifforgeError(f"cannot read {path}: {exc}") from None
    model = data.get("model", {}) if isinstance(data, dict) else {}
    if not isinstance(model, dict) or model.get("type") != "BPE" or "vocab" not in model:
        raise DifforgeError(f"{path} is not a BPE (CLIP) tokenizer")
    return model


def check_clip_tokenizer(tok: Path) -> Path:
    """``tok`` if it holds a CLIP tokenizer difforge can write out, else a one-line error."""
    if all((tok / name).is_file() for name in FILES):
        return tok
    if not (tok / "tokenizer.json").is_file():
        raise DifforgeError(
            f"{tok} holds no CLIP tokenizer (vocab.json + merges.txt or tokenizer.json)"
        )
    _bpe_model(tok)
    return tok


def write_clip_tokenizer(tok: Path, dest: Path) -> None:
    """``vocab.json`` and ``merges.txt`` in ``dest``, copied or converted from ``tok``."""
    dest.mkdir(parents=True, exist_ok=True)
    if all((tok / name).is_file() for name in FILES):
        for name in FILES:
            shutil.copyfile(tok / name, dest / name)
        return
    model = _bpe_model(tok)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    (dest / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False), "utf-8")
    (dest / "merges.txt").write_text("\n".join(["#version: 0.2", *merges]) + "\n", "utf-8")
