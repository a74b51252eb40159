"""A cheap structural fingerprint, so passes can say truthfully whether they changed a graph."""

from __future__ import annotations

import collections

import onnx_ir as ir


def fingerprint(model: ir.Model) -> tuple[int, tuple[tuple[str, int], ...]]:
    counts = collections.Counter(f"{n.domain}::{n.op_type}" for n in model.graph.all_nodes())
    return len(model.graph.initializers), tuple(sorted(counts.items()))
