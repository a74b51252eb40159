"""Cold start, measured in a fresh interpreter: import, session creation, first generation.

The child prints one JSON line; its peak resident memory (``VmHWM`` of its own address
space, not ``ru_maxrss``, which Linux carries over from the parent across fork and exec) is
the peak of a whole first generation at that resolution, free of the parent's allocations.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from difforge.errors import DifforgeError

_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import numpy, onnxruntime
import difforge.runtime as rt
t1 = time.perf_counter()
art, res, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
steps, threads = sys.argv[4], sys.argv[5]
pipe = rt.load(art, threads=None if threads == "-" else int(threads))
t2 = time.perf_counter()
req = pipe.example_request(
    batch, steps=None if steps == "-" else int(steps), height=res, width=res
)
out = pipe(req)
t3 = time.perf_counter()
# VmHWM belongs to this process's own address space; ru_maxrss survives fork+exec and can
# report the parent's peak instead.
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
try:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
except OSError:
    pass
print(json.dumps({
    "import_s": t1 - t0,
    "load_s": t2 - t1,
    "session_create_s": {k: r.load_seconds for k, r in pipe.runners.items()},
    "first_run_s": t3 - t2,
    "first_run_timings": out.timings,
    "peak_rss_bytes": peak,
}))
"""


def cold_start(
    artifact: Path,
    resolution: int,
    batch: int,
    steps: int | None,
    threads: int | None,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Run one generation in a new interpreter and return its cold-start breakdown."""
    args = [
        sys.executable,
        "-c",
        _CHILD,
        str(artifact),
        str(resolution),
        str(batch),
        "-" if steps is None else str(steps),
        "-" if threads is None else str(threads),
    ]
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise DifforgeError(
            f"cold-start run failed: {lines[-1] if lines else f'exit {proc.returncode}'}"
        )
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    data["resolution"] = resolution
    data["process_wall_s"] = wall
    # interpreter start-up and exit: what the child's own clocks did not see
    data["interpreter_s"] = max(0.0, wall - data["import_s"] - data["load_s"] - data["first_run_s"])
    return data
