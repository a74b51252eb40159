"""Built TensorRT engines, content-addressed: the key names everything an engine depends on
(the ONNX graph and its weights by sha256, the precision, the profile set, the TensorRT
version, the GPU's compute capability, the plugin versions), so a lookup can only return an
engine built from the same inputs for the same GPU and TensorRT; anything else misses and is
built. An engine in an artifact records the same facts, and :func:`check_engine_fits` refuses
it on another GPU or TensorRT version instead of letting TensorRT fail on deserialisation.

The cache lives in ``$DIFFORGE_ENGINE_CACHE`` (default ``~/.cache/difforge/engines``), one
folder per key digest holding ``engine.plan`` and ``key.json``; writes go to a temporary name
first, so a build that dies leaves no half-written engine behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from difforge.artifact.engine_fit import check_engine_fits
from difforge.errors import DifforgeError

ENV = "DIFFORGE_ENGINE_CACHE"
PLAN = "engine.plan"
KEY = "key.json"
#: a partial write older than this is a dead build's leftover (a younger one may be running)
STALE_PARTIAL_S = 3600


def default_root() -> Path:
    return Path(os.environ.get(ENV) or Path.home() / ".cache" / "difforge" / "engines")


def sha256_files(paths: list[Path]) -> str:
    """One digest over the files' names and bytes (a graph and its external weights)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    precision: str
    profiles: str  # the profile set, as canonical JSON
    tensorrt: str
    compute_capability: str
    plugins: tuple[str, ...] = ()

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CachedEngine:
    digest: str
    key: dict[str, Any]
    size: int
    last_used: float


class EngineCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_root()

    def get(self, key: EngineKey) -> tuple[bytes, dict[str, Any]] | None:
        """The engine built for ``key`` and the settings its build recorded, or None."""
        folder = self.root / key.digest()
        try:
            stored = json.loads((folder / KEY).read_text(encoding="utf-8"))
            plan = (folder / PLAN).read_bytes()
        except (OSError, ValueError):
            return None
        settings = stored.pop("settings", {}) if isinstance(stored, dict) else {}
        if stored != _record(key):
            return None  # a digest collision or a hand-edited folder: never reuse it
        with contextlib.suppress(OSError):  # a read-only cache still serves
            os.utime(folder / PLAN)  # last use, for gc
        return plan, dict(settings) if isinstance(settings, dict) else {}

    def put(self, key: EngineKey, plan: bytes, settings: dict[str, Any] | None = None) -> Path:
        folder = self.root / key.digest()
        tmp = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            (tmp / PLAN).write_bytes(plan)
            record = _record(key) | {"settings": settings or {}}
            (tmp / KEY).write_text(json.dumps(record), encoding="utf-8")
            shutil.rmtree(folder, ignore_errors=True)
            tmp.replace(folder)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            why = exc.strerror or str(exc)
            raise DifforgeError(f"cannot write the engine cache {self.root}: {why}") from None
        return folder / PLAN

    def entries(self) -> list[CachedEngine]:
        out = []
        for folder in sorted(self.root.glob("*")) if self.root.is_dir() else []:
            plan = folder / PLAN
            if folder.name.startswith(".") or not plan.is_file():
                continue
            try:
                key = json.loads((folder / KEY).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                key = {}
            stat = plan.stat()
            out.append(CachedEngine(folder.name, key, stat.st_size, stat.st_mtime))
        return out

    def gc(self, older_than_days: float | None = None) -> list[CachedEngine]:
        """Remove engines unused for ``older_than_days`` (None: all), and leftovers of
        interrupted writes; return the engines removed."""
        now = time.time()
        removed = [
            e for e in self.entries()
            if older_than_days is None or now - e.last_used > older_than_days * 86400
        ]
        for entry in removed:
            shutil.rmtree(self.root / entry.digest, ignore_errors=True)
        for leftover in self.root.glob(".*.partial-*") if self.root.is_dir() else []:
            if now - leftover.stat().st_mtime > STALE_PARTIAL_S:
                shutil.rmtree(leftover, ignore_errors=True)
        return removed


def _record(key: EngineKey) -> dict[str, Any]:
    """``key`` as ``key.json`` stores it (JSON has lists, not tuples)."""
    return asdict(key) | {"plugins": list(key.plugins)}


__all__ = ["CachedEngine", "EngineCache", "EngineKey", "check_engine_fits", "default_root"]
