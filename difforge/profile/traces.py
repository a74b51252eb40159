"""Per-call kernel traces and node -> module tables, per engine backend.

The per-op profile needs two things from a profiled pipeline's runner: one :class:`Trace` per
call (kernel events with node names and op types) and, for each node name, the PyTorch
module it came from. ONNX Runtime writes a JSON trace and runs ONNX graphs that carry the
exporter's metadata; OpenVINO keeps per-node counters in memory and runs an IR whose
``rt_info`` holds the module table its build recorded. A backend without a reader here has no
per-op profile (one line says so).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from difforge.errors import DifforgeError
from difforge.profile.modules import node_modules, unit_path
from difforge.profile.ops import Trace, read_runs


@dataclass
class Modules:
    """A component's node -> module tables: aggregated (for ``by_module``) and deepest (for
    the self-attention split)."""

    aggregated: dict[str, str]
    deepest: dict[str, str]


def merge(component: str, runs: Sequence[Trace]) -> Trace:
    """One trace of several calls (a generation's denoiser calls, say)."""
    out = Trace(component, run_s=sum(r.run_s for r in runs))
    for run in runs:
        out.kernels.extend(run.kernels)
        out.implementations.extend(run.implementations)
    return out


def _ort_runs(role: str, runner: Any) -> list[Trace] | None:
    path = runner.end_profiling()
    return read_runs(role, Path(path)) if path else None


def _ort_modules(graph: Path) -> Modules:
    return Modules(node_modules(graph), node_modules(graph, aggregate=False))


def _openvino_runs(role: str, runner: Any) -> list[Trace] | None:
    if not runner.profiling:
        return None
    traces = []
    for call in runner.calls:
        trace = Trace(role, run_s=call.wall_s)
        for node, op, kernel, seconds in call.nodes:
            trace.kernels.append((node, op, seconds))
            trace.implementations.append(kernel)
        traces.append(trace)
    return traces


def _openvino_modules(graph: Path) -> Modules:
    """The module table the build stored in the IR (see the OpenVINO engine), read with
    OpenVINO without compiling anything."""
    import openvino as ov

    model = ov.Core().read_model(str(graph))
    key = ["difforge", "modules"]
    table: dict[str, str] = (
        json.loads(model.get_rt_info(key).astype(str)) if model.has_rt_info(key) else {}
    )
    return Modules({n: unit_path(p) for n, p in table.items()}, table)


#: backend -> (per-call traces of a profiled runner, the node -> module tables of its graph)
READERS: dict[
    str,
    tuple[Callable[[str, Any], list[Trace] | None], Callable[[Path], Modules]],
] = {
    "ort": (_ort_runs, _ort_modules),
    "openvino": (_openvino_runs, _openvino_modules),
}


def profiled(role: str, runner: Any, graph: Path) -> tuple[list[Trace], Modules] | None:
    """Per-call traces of ``runner`` (profiling was on since it loaded) and its graph's
    module tables; ``None`` when the runner recorded nothing."""
    reader = READERS.get(runner.backend)
    if reader is None:
        raise DifforgeError(
            f"difforge profile has no per-op reader for the {runner.backend} engine "
            f"(it reads {', '.join(sorted(READERS))})"
        )
    runs = reader[0](role, runner)
    if not runs:
        return None
    return runs, reader[1](graph)
