"""The torch-free T5 tokenizer (read from ``tokenizer.json``) against transformers'
T5TokenizerFast, id for id, as FluxPipeline calls it; and the compile side that reads a
folder's T5 tokenizer and copies it into an artifact.

No network: a tiny SentencePiece-style Unigram model is trained here on a few sentences,
wrapped in T5TokenizerFast and saved. It is saved twice: with a SentencePiece ``Precompiled``
character map before the whitespace folding (as real T5 files are, FLUX's among them; the map
is built here, mapping a few characters) and with the trainer's own NFKC normalizers.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from difforge.errors import DifforgeError
from difforge.runtime.tokenizer_json import JsonTokenizer
from difforge.sources.tokenizer_json import (
    DEFAULT_MAX_LENGTH,
    JsonTokenizerSettings,
    read_t5_tokenizer,
    write_json_tokenizer,
)

SENTENCES = [
    "a photo of a cat sitting on a mat",
    "the quick brown fox jumps over the lazy dog",
    "an astronaut riding a horse on the moon, digital art",
    'naïve café, déjà vu! 42 towers? (yes) -- "quoted"',
    "Ein Hund läuft im Park. fine flowers",
    "猫が好きです。",
]
#: what the test's character map rewrites, as SentencePiece's NFKC-like maps do
CHARSMAP = {"ﬁ": "fi", "ﬂ": "fl", "Ａ": "A", "½": "1⁄2", "\u3000": " ", "é": "é"}
LONG = "the quick brown fox jumps over the lazy dog " * 80
PROMPTS = [
    "a photo of a cat",
    "",
    " ",
    "  leading, trailing and  repeated   spaces  ",
    "tabs\tand\nnewlines\r\n",
    'punctuation!? (yes), "quotes" -- dash... 42% & co.',
    "naïve café ﬁne ﬂour ½ Ａ\u3000wide",
    "猫が好きです。 🐈 Ωmega",
    "x</s>y <pad> z<unk>",
    "UNSEEN WORDS qqq zzz",
    LONG,
]
MAX_LENGTHS = (16, 512)
NORMALIZERS = ("precompiled", "nfkc")


def _charsmap(mapping: dict[str, str]) -> bytes:
    """A SentencePiece precompiled character map: a double-array trie (darts-clone's layout)
    from each source's UTF-8 bytes to an offset into a pool of NUL-ended replacements."""
    pool, values = bytearray(), {}
    for src, dst in mapping.items():
        values[src.encode()] = len(pool)
        pool += dst.encode() + b"\0"
    trie: dict[Any, Any] = {}
    for key, value in values.items():
        node = trie
        for byte in key:
            node = node.setdefault(byte, {})
        node[None] = value
    units = [0] * 256

    def place(pos: int, node: dict[Any, Any]) -> None:
        base = len(units)  # a fresh block of 256 units for this node's children
        units.extend([0] * 256)
        units[pos] |= (pos ^ base) << 10  # the offset to the block
        if None in node:  # a key ends here: flag it, and the value sits at label 0
            units[pos] |= 1 << 8
            units[base] = (1 << 31) | node[None]
        for byte, child in node.items():
            if byte is not None:
                units[base ^ byte] = byte
                place(base ^ byte, child)

    place(0, trie)
    blob = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(blob)) + blob + bytes(pool)


def _save_t5(folder: Path, normalizer: str) -> Path:
    from tokenizers import Regex, SentencePieceUnigramTokenizer, normalizers
    from transformers import T5TokenizerFast

    trained = SentencePieceUnigramTokenizer()
    trained.train_from_iterator(
        SENTENCES * 3,
        vocab_size=150,
        special_tokens=["<pad>", "</s>", "<unk>"],  # T5's ids: 0, 1, 2
        unk_token="<unk>",
        show_progress=False,
    )
    backend = trained._tokenizer
    if normalizer == "precompiled":
        backend.normalizer = normalizers.Sequence(
            [normalizers.Precompiled(_charsmap(CHARSMAP)), normalizers.Replace(Regex(" {2,}"), " ")]
        )
    tok = T5TokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_ids=0,
    )
    tok.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module", params=NORMALIZERS)
def t5_folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_t5(tmp_path_factory.mktemp(f"t5-{request.param}"), request.param)


@pytest.fixture(scope="module")
def theirs(t5_folder: Path) -> Any:
    from transformers import T5TokenizerFast

    return T5TokenizerFast.from_pretrained(str(t5_folder))


def _their_ids(tok: Any, prompts: list[str], max_length: int) -> np.ndarray:
    # as FluxPipeline._get_t5_prompt_embeds calls tokenizer_2
    enc = tok(prompts, padding="max_length", max_length=max_length, truncation=True)
    return np.asarray(enc.input_ids, dtype=np.int64)


def _ours(folder: Path, max_length: int, pad_token: str = "<pad>") -> JsonTokenizer:
    return JsonTokenizer(folder / "tokenizer.json", max_length, pad_token)


@pytest.mark.parametrize("max_length", MAX_LENGTHS)
@pytest.mark.parametrize("prompt", PROMPTS)
def test_matches_transformers(t5_folder: Path, theirs: Any, max_length: int, prompt: str) -> None:
    ids = _ours(t5_folder, max_length)([prompt])
    assert ids.dtype == np.int64 and ids.shape == (1, max_length)
    np.testing.assert_array_equal(ids, _their_ids(theirs, [prompt], max_length))


@pytest.mark.parametrize("max_length", MAX_LENGTHS)
def test_a_batch_matches_transformers(t5_folder: Path, theirs: Any, max_length: int) -> None:
    ours = _ours(t5_folder, max_length)
    np.testing.assert_array_equal(ours(PROMPTS), _their_ids(theirs, PROMPTS, max_length))
    assert ours([]).shape == (0, max_length)


def test_not_vacuous(t5_folder: Path) -> None:
    """Pads on the right with <pad>, ends with </s>; the long prompt fills the window, and the
    character map (where the file has one) is applied."""
    ours = _ours(t5_folder, 16)
    assert (ours.pad_id, ours.eos_id) == (0, 1)
    row = list(ours(["a cat"])[0])
    end = row.index(1)
    assert 1 < end < 15 and row[end + 1 :] == [0] * (15 - end)
    assert list(ours([LONG])[0]).count(1) == 1 and ours([LONG])[0, -1] == 1
    assert 0 not in list(ours([LONG])[0])
    folded = ours.encode("ﬁne Ａ") == ours.encode("fine A")
    assert folded == t5_folder.name.startswith("t5-precompiled")


@pytest.mark.parametrize("max_length", MAX_LENGTHS)
def test_dropped_counts_what_the_window_cuts(t5_folder: Path, theirs: Any, max_length: int) -> None:
    ours = _ours(t5_folder, max_length)
    for prompt in PROMPTS:
        whole = len(theirs(prompt).input_ids)  # untruncated, with </s>
        assert ours.dropped(prompt) == max(0, whole - max_length), prompt
    assert ours.dropped("a photo of a cat") == 0 and ours.dropped("") == 0
    assert ours.dropped(LONG) == len(ours.encode(LONG)) - (max_length - 1) > 0


def _refused(match: str, make: Any) -> str:
    with pytest.raises(DifforgeError, match=match) as err:
        make()
    message = str(err.value)
    assert "\n" not in message
    return message


def test_a_bad_file_is_refused_in_one_line(t5_folder: Path, tmp_path: Path) -> None:
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"model": {"type": "Unigram", "vocab": [', encoding="utf-8")
    assert str(bad) in _refused(
        "cannot read the tokenizer", lambda: JsonTokenizer(bad, 16, "<pad>")
    )
    bad.write_text('{"version": "1.0", "model": {"type": "Nonsense"}}', encoding="utf-8")
    assert str(bad) in _refused(
        "cannot read the tokenizer", lambda: JsonTokenizer(bad, 16, "<pad>")
    )
    missing = tmp_path / "absent.json"
    assert str(missing) in _refused("cannot read", lambda: JsonTokenizer(missing, 16, "<pad>"))


def test_a_non_unigram_file_is_refused(tmp_path: Path) -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    path = tmp_path / "tokenizer.json"
    Tokenizer(WordLevel({"<pad>": 0, "</s>": 1, "<unk>": 2}, unk_token="<unk>")).save(str(path))
    _refused(
        r"holds a WordLevel tokenizer, not T5's Unigram", lambda: JsonTokenizer(path, 8, "<pad>")
    )


def test_a_pad_token_outside_the_vocabulary_or_a_tiny_window_is_refused(t5_folder: Path) -> None:
    _refused(r"tokenizer\.json has no token '\[PAD\]'", lambda: _ours(t5_folder, 16, "[PAD]"))
    _refused(r"at least 2 tokens, not 1", lambda: _ours(t5_folder, 1))


def _python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    return done.stdout.strip().splitlines()[-1]


def test_the_runtime_module_imports_neither_torch_nor_transformers(t5_folder: Path) -> None:
    path = str(t5_folder / "tokenizer.json")
    code = (
        "import sys; from pathlib import Path\n"
        "from difforge.runtime.tokenizer_json import JsonTokenizer\n"
        f"JsonTokenizer(Path({path!r}), 16, '<pad>')(['a cat'])\n"
        "print([m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules])"
    )
    assert _python(code) == "[]"


def test_without_tokenizers_the_runtime_says_what_to_install(t5_folder: Path) -> None:
    path = str(t5_folder / "tokenizer.json")
    code = (
        "import sys; from pathlib import Path\n"
        "sys.modules['tokenizers'] = None  # as if not installed\n"
        "from difforge.errors import DifforgeError\n"
        "from difforge.runtime.tokenizer_json import JsonTokenizer\n"
        "try:\n"
        f"    JsonTokenizer(Path({path!r}), 16, '<pad>')\n"
        "except DifforgeError as exc:\n"
        "    print(repr(str(exc)))\n"
    )
    message = _python(code)
    assert "pip install tokenizers" in message and "\\n" not in message


# ---- the compile side: reading a folder's T5 tokenizer, copying it into an artifact ----


def test_settings_of_a_saved_folder(t5_folder: Path) -> None:
    # saved without a model_max_length: transformers writes int(1e30), "no limit"
    config = json.loads((t5_folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["model_max_length"] >= 1 << 20
    assert read_t5_tokenizer(t5_folder) == JsonTokenizerSettings("<pad>", DEFAULT_MAX_LENGTH)


def _copy_folder(src: Path, dest: Path, **config: Any) -> Path:
    dest.mkdir()
    (dest / "tokenizer.json").write_bytes((src / "tokenizer.json").read_bytes())
    (dest / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return dest


def test_settings_follow_the_config(t5_folder: Path, tmp_path: Path) -> None:
    flux = _copy_folder(
        t5_folder,
        tmp_path / "flux",
        model_max_length=512,
        pad_token="<pad>",
        added_tokens_decoder={"0": {"content": "<pad>", "special": True}},
    )
    assert read_t5_tokenizer(flux) == JsonTokenizerSettings("<pad>", 512)
    short = _copy_folder(t5_folder, tmp_path / "short", model_max_length=77)
    assert read_t5_tokenizer(short) == JsonTokenizerSettings("<pad>", 77)
    # no added_tokens_decoder: transformers' legacy path, the special tokens map wins
    legacy = _copy_folder(t5_folder, tmp_path / "legacy", pad_token="<pad>")
    (legacy / "special_tokens_map.json").write_text(
        json.dumps({"pad_token": {"content": "<unk>", "lstrip": False}}), encoding="utf-8"
    )
    assert read_t5_tokenizer(legacy).pad_token == "<unk>"
    bad = _copy_folder(t5_folder, tmp_path / "bad", model_max_length="long")
    _refused(
        r"tokenizer_config\.json: model_max_length: expected an integer",
        lambda: read_t5_tokenizer(bad),
    )


def test_refusals_of_the_compile_side(t5_folder: Path, tmp_path: Path) -> None:
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "spiece.model").write_bytes(b"\0")
    message = _refused(
        r"needs the fast tokenizer's tokenizer\.json", lambda: read_t5_tokenizer(slow)
    )
    assert "spiece.model" in message and "T5TokenizerFast.from_pretrained(" in message
    assert ".save_pretrained(" in message
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(r"has no tokenizer\.json", lambda: read_t5_tokenizer(empty))
    odd_pad = _copy_folder(t5_folder, tmp_path / "odd-pad", pad_token="[PAD]")
    _refused(
        r"the pad token '\[PAD\]' is not in the vocabulary", lambda: read_t5_tokenizer(odd_pad)
    )
    not_t5 = tmp_path / "not-t5"
    not_t5.mkdir()
    (not_t5 / "tokenizer.json").write_text('{"model": {"type": "BPE"}}', encoding="utf-8")
    _refused(r"is not a Unigram \(T5\) tokenizer", lambda: read_t5_tokenizer(not_t5))


def test_write_copies_what_the_runtime_reads(t5_folder: Path, theirs: Any, tmp_path: Path) -> None:
    dest = tmp_path / "artifact" / "tokenizer_2"
    settings = write_json_tokenizer(t5_folder, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["tokenizer.json"]
    copied = (dest / "tokenizer.json").read_bytes()
    assert copied == (t5_folder / "tokenizer.json").read_bytes()
    ours = JsonTokenizer(dest / "tokenizer.json", 16, settings.pad_token)
    np.testing.assert_array_equal(ours(PROMPTS), _their_ids(theirs, PROMPTS, 16))
