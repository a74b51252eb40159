"""Mutate a valid artifact, load and run each mutant, and report every outcome (run as a
script by test_fuzz.py, in a subprocess: a crash of a native library must fail the test, not
end the test run).

Usage: fuzz_driver.py ARTIFACT SANDBOX SEED MANIFEST_CASES GRAPH_CASES

The only outcomes allowed are success and DifforgeError; every file opened for writing must
lie inside SANDBOX (the process runs with SANDBOX as its working folder, and a Python audit
hook records every open for writing).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

WRITES: list[str] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and len(args) >= 2 and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1], args[2] if len(args) > 2 else 0
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        )
        if writing:
            WRITES.append(os.fsdecode(args[0]))


VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 7, 2**31, 2**70, 1e308, -1e-9, float("nan"), float("inf"),
    "", "x", "../../outside.txt", "/etc/passwd", "a" * 5000, [], [1, 2], {}, {"a": 1},
    [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
]


def _paths(node: Any, trail: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [trail] if trail else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*trail, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*trail, i))
    return out


def mutate(data: dict[str, Any], rng: np.random.Generator) -> tuple[dict[str, Any], str]:
    data = copy.deepcopy(data)
    paths = _paths(data)
    trail = paths[int(rng.integers(len(paths)))]
    parent = data
    for key in trail[:-1]:
        parent = parent[key]
    last = trail[-1]
    kind = int(rng.integers(4))
    if kind == 0:
        del parent[last]
        return data, f"delete {'.'.join(map(str, trail))}"
    old = parent[last]
    if kind == 1 and isinstance(old, (int, float)) and not isinstance(old, bool):
        new: Any = old * float(rng.choice([-1, 0, 10, 1e6, 0.5])) + int(rng.integers(-2, 3))
        if isinstance(old, int) and float(new).is_integer() and abs(new) < 2**62:
            new = int(new)
    elif kind == 2 and isinstance(old, str):
        new = str(rng.choice(["../" + old, "/" + old, old + "/..", old[::-1], old * 3, ""]))
    else:
        new = VALUES[int(rng.integers(len(VALUES)))]
    parent[last] = new
    return data, f"set {'.'.join(map(str, trail))} = {str(new)[:40]}"


def attempt(root: Path) -> str:
    import difforge
    from difforge.errors import DifforgeError

    try:
        pipe = difforge.load(root)
        res = pipe.manifest.pipeline.resolution
        pipe(pipe.example_request(1, steps=2, height=res.min, width=res.min))
        return "ran"
    except DifforgeError as err:
        return "refused: " + str(err).split(":")[0][:60]


def rehash(root: Path) -> None:
    from difforge.artifact.manifest import read_manifest, write_manifest

    write_manifest(root, read_manifest(root, verify=False))


def main() -> int:
    source, sandbox = Path(sys.argv[1]), Path(sys.argv[2])
    seed, manifest_cases, graph_cases = (int(a) for a in sys.argv[3:6])
    os.chdir(sandbox)
    root = sandbox / "artifact"
    shutil.copytree(source, root)
    sys.addaudithook(_audit)
    rng = np.random.default_rng(seed)
    original = json.loads((root / "manifest.json").read_text())
    outcomes: Counter[str] = Counter()
    for _ in range(manifest_cases):
        data, what = mutate(original, rng)
        (root / "manifest.json").write_text(json.dumps(data))
        try:
            outcomes[attempt(root).split(":")[0]] += 1
        except Exception:
            print(json.dumps({"bad": what, "error": traceback.format_exc()}))
            return 1
    (root / "manifest.json").write_text(json.dumps(original))
    graph = root / original["components"]["denoiser"]["file"]
    pristine = graph.read_bytes()
    for _ in range(graph_cases):
        blob = bytearray(pristine)
        for _ in range(int(rng.integers(1, 9))):
            blob[int(rng.integers(len(blob)))] = int(rng.integers(256))
        if rng.random() < 0.2:
            blob = blob[: int(rng.integers(len(blob)))]
        graph.write_bytes(bytes(blob))
        rehash(root)
        try:
            outcomes["graph " + attempt(root).split(":")[0]] += 1
        except Exception:
            print(json.dumps({"bad": "graph bytes", "error": traceback.format_exc()}))
            return 1
    outside = sorted({w for w in WRITES if not os.path.realpath(w).startswith(str(sandbox))})
    report = {"outcomes": dict(outcomes), "writes": len(WRITES), "outside_writes": outside}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
