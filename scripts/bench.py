"""``make bench``: the standard side-by-side benchmark, written into docs/perf.md.

Usage: python scripts/bench.py [--out docs/perf.md] [--runs N] [--no-compile]
Rewrites only the block between ``<!-- bench:begin -->`` and ``<!-- bench:end -->``.
"""

from __future__ import annotations

import sys

from difforge.cli.bench import bench_command
from difforge.errors import DifforgeError


def main() -> None:
    args = sys.argv[1:] or ["--out", "docs/perf.md"]
    if "--runs" not in args:  # the standard set must finish in 10 minutes on 2 busy cores
        args += ["--runs", "5"]
    try:
        bench_command.main(args=args, prog_name="bench.py", standalone_mode=False)
    except DifforgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
