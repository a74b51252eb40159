"""Calibration data: each component's inputs as the fp32 artifact saw them along real
trajectories, kept per timestep bucket.

``difforge calibrate`` runs the fp32 artifact on the torch-free runtime, records every feed of
every component and keeps a timestep-stratified subset; the precision stage reads it for INT8
scales and for the quality gates. In the artifact folder::

    calibration/<component>/shard-000/<input>.npy    arrays [records, *shape]

and the manifest's ``calibration`` section says how it was made and, per component, each
record's trajectory, step and timestep bucket, so a split or a bucket is chosen without
loading arrays. Plain ``.npy`` files (``np.save``): byte-identical for the same data, readable
with numpy alone. Trajectories are split once: the last ``gate_trajectories`` are held out for
the quality gates and never calibrate.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from difforge.artifact.fields import Fields
from difforge.artifact.files import check_relative, inside
from difforge.errors import DifforgeError

FOLDER = "calibration"
#: default bound on one shard's size
SHARD_BYTES = 64 << 20
MAX_RECORDS = 1 << 16
PARTS = ("calibration", "gate", "all")


@dataclass
class ComponentRecords:
    """One component's recorded feeds: input names, shard folders, and per record
    ``[trajectory, step, bucket]``."""

    inputs: list[str]
    shards: list[str]
    records: list[list[int]]
    #: records per shard (the last may hold fewer)
    per_shard: int

    @classmethod
    def read(cls, f: Fields) -> ComponentRecords:
        shards = [check_relative(s, f.where("shards")) for s in f.items("shards")]
        records = f.items("records")
        if len(records) > MAX_RECORDS or not all(
            isinstance(r, list) and len(r) == 3 and all(type(v) is int and v >= 0 for v in r)
            for r in records
        ):
            raise f.fail("records", "expected [trajectory, step, bucket] integer triples")
        per_shard = f.integer("per_shard", minimum=1, maximum=MAX_RECORDS)
        if len(shards) != -(-len(records) // per_shard):
            raise f.fail("shards", f"{len(shards)} shards cannot hold {len(records)} records")
        inputs = f.items("inputs")
        if not all(isinstance(i, str) and i.isidentifier() for i in inputs):
            raise f.fail("inputs", "expected input names")
        return cls(inputs=inputs, shards=shards, records=records, per_shard=per_shard)


@dataclass
class CalibrationSection:
    """How the calibration data was made and what it holds."""

    seed: int
    steps: int
    trajectories: int
    gate_trajectories: int
    buckets: int
    guidance: float
    resolution: int
    #: sha256 of the prompt list (text models) or of the class labels used
    conditioning_sha256: str
    components: dict[str, ComponentRecords] = field(default_factory=dict)

    @classmethod
    def read(cls, f: Fields) -> CalibrationSection:
        trajectories = f.integer("trajectories", minimum=2, maximum=MAX_RECORDS)
        return cls(
            seed=f.integer("seed", minimum=0),
            steps=f.integer("steps", minimum=1, maximum=10_000),
            trajectories=trajectories,
            gate_trajectories=f.integer("gate_trajectories", minimum=1, maximum=trajectories - 1),
            buckets=f.integer("buckets", minimum=1, maximum=100),
            guidance=f.number("guidance", minimum=0.0, maximum=1e4),
            resolution=f.integer("resolution", minimum=1, maximum=1 << 16),
            conditioning_sha256=f.text("conditioning_sha256"),
            components={k: ComponentRecords.read(v) for k, v in f.mapping("components").items()},
        )

    def files(self) -> list[str]:
        """Every array file the section names."""
        return [
            f"{shard}/{name}.npy"
            for rec in self.components.values()
            for shard in rec.shards
            for name in rec.inputs
        ]

    def bucket_names(self) -> list[str]:
        """``t0`` is the noisiest quarter (first steps) for 4 buckets, ``t3`` the last."""
        return [f"t{i}" for i in range(self.buckets)]


def bucket_of(step: int, steps: int, buckets: int) -> int:
    """The timestep bucket of step ``step`` (0-based) of ``steps``: equal runs of steps."""
    return min(buckets - 1, step * buckets // max(steps, 1))


class CalibrationWriter:
    """Collects feeds as the runtime makes them; :meth:`write` keeps a stratified subset."""

    def __init__(self) -> None:
        self._feeds: dict[str, list[dict[str, np.ndarray]]] = {}
        self._tags: dict[str, list[list[int]]] = {}

    def add(self, key: str, feeds: dict[str, np.ndarray], tag: list[int]) -> None:
        self._feeds.setdefault(key, []).append({k: np.array(v) for k, v in feeds.items()})
        self._tags.setdefault(key, []).append(list(tag))

    def count(self, key: str) -> int:
        return len(self._tags.get(key, []))

    def keep(self, per_bucket: int, seed: int, gate_from: int) -> None:
        """Per component, split (trajectories from ``gate_from`` on are the gate's) and
        bucket, keep at most ``per_bucket`` records: a seeded draw, kept in recording order."""
        for key, tags in self._tags.items():
            rng = np.random.default_rng([seed, len(key)])
            groups: dict[tuple[bool, int], list[int]] = {}
            for i, (traj, _step, bucket) in enumerate(tags):
                groups.setdefault((traj >= gate_from, bucket), []).append(i)
            chosen: list[int] = []
            for _group, idx in sorted(groups.items()):
                if len(idx) > per_bucket:
                    idx = rng.choice(idx, size=per_bucket, replace=False).tolist()
                chosen.extend(idx)
            chosen.sort()
            self._feeds[key] = [self._feeds[key][i] for i in chosen]
            self._tags[key] = [tags[i] for i in chosen]

    def write(self, root: Path, shard_bytes: int = SHARD_BYTES) -> dict[str, ComponentRecords]:
        out: dict[str, ComponentRecords] = {}
        for key, feeds in self._feeds.items():
            if not feeds:
                continue
            names = sorted(feeds[0])
            shapes = {n: feeds[0][n].shape for n in names}
            if any({n: f[n].shape for n in names} != shapes for f in feeds):
                raise DifforgeError(f"calibration: {key}'s inputs changed shape between calls")
            record_bytes = sum(feeds[0][n].nbytes for n in names)
            per_shard = max(1, min(MAX_RECORDS, shard_bytes // max(record_bytes, 1)))
            shards = []
            for first in range(0, len(feeds), per_shard):
                rel = f"{FOLDER}/{key}/shard-{first // per_shard:03d}"
                (root / rel).mkdir(parents=True, exist_ok=True)
                for name in names:
                    stacked = np.stack([f[name] for f in feeds[first : first + per_shard]])
                    np.save(root / rel / f"{name}.npy", stacked, allow_pickle=False)
                shards.append(rel)
            out[key] = ComponentRecords(names, shards, self._tags[key], per_shard)
        return out


class CalibrationData:
    """Reads an artifact's calibration data (the manifest has checked the paths)."""

    def __init__(self, root: Path, section: CalibrationSection) -> None:
        self.root = root
        self.section = section

    def has(self, key: str) -> bool:
        return key in self.section.components

    def _in_part(self, tag: list[int], part: str) -> bool:
        gate = tag[0] >= self.section.trajectories - self.section.gate_trajectories
        return part == "all" or (part == "gate") == gate

    def records(self, key: str, part: str = "calibration") -> list[tuple[int, list[int]]]:
        """``(index, [trajectory, step, bucket])`` of the records in ``part``."""
        if part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}")
        rec = self._component(key)
        return [(i, tag) for i, tag in enumerate(rec.records) if self._in_part(tag, part)]

    def feeds(
        self, key: str, part: str = "calibration", bucket: int | None = None
    ) -> Iterator[dict[str, np.ndarray]]:
        """Each record's feeds, in order; ``bucket`` keeps one timestep bucket."""
        rec = self._component(key)
        loaded: dict[int, dict[str, Any]] = {}
        for index, tag in self.records(key, part):
            if bucket is not None and tag[2] != bucket:
                continue
            shard, row = divmod(index, rec.per_shard)
            if shard not in loaded:
                loaded.clear()
                folder = inside(self.root, rec.shards[shard])
                loaded[shard] = {
                    n: np.load(folder / f"{n}.npy", mmap_mode="r", allow_pickle=False)
                    for n in rec.inputs
                }
            yield {n: np.ascontiguousarray(a[row]) for n, a in loaded[shard].items()}

    def _component(self, key: str) -> ComponentRecords:
        try:
            return self.section.components[key]
        except KeyError:
            raise DifforgeError(f"the calibration data holds no inputs of {key}") from None
