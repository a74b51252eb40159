"""Per-op time from an engine's profiler, grouped by op type, by source module and (where the
engine names it) by the kernel implementation that ran.

ONNX Runtime names each kernel event ``<node name>_kernel_time``. Nodes it creates while
optimising the session (layout transforms, its own fusions) carry names derived from the
graph node they replace, or new names; those are matched to the graph node whose name they
start with, else reported as ``(runtime-inserted)``.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from difforge.profile.modules import label

_SUFFIX = "_kernel_time"
#: suffixes ONNX Runtime appends to node names it rewrites (NCHWc, fused activations, ...)
_ORT_SUFFIX = re.compile(r"(_token_\d+|_nchwc)$")
#: layout conversions between plain and blocked tensors: ONNX Runtime's NCHWc ones and
#: OpenVINO's reorders
LAYOUT_OPS = ("ReorderInput", "ReorderOutput", "Reorder")
LAYOUT = "(layout conversion)"
UNMAPPED = "(runtime-inserted)"


@dataclass
class Trace:
    """Kernel events of one component's trace: (node name, op type, seconds)."""

    component: str
    run_s: float = 0.0
    kernels: list[tuple[str, str, float]] = field(default_factory=list)
    #: per kernel event, the implementation that ran it, where the engine says (OpenVINO:
    #: ``brgconv_avx2_I8``, ``jit_avx2_f32``); empty for ONNX Runtime's trace, which does not
    implementations: list[str] = field(default_factory=list)


def _events(path: Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return events


def _model_runs(events: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(start, duration) in microseconds of each session run, in order."""
    return sorted(
        (float(ev.get("ts", 0)), float(ev.get("dur", 0)))
        for ev in events
        if ev.get("cat") == "Session" and ev.get("name") == "model_run"
    )


def _kernels(events: list[dict[str, Any]]) -> list[tuple[float, str, str, float]]:
    """(start, node name, op type, seconds) of each kernel event."""
    out = []
    for ev in events:
        name = str(ev.get("name", ""))
        if ev.get("cat") == "Node" and name.endswith(_SUFFIX):
            op = str(ev.get("args", {}).get("op_name", "?"))
            ts, seconds = float(ev.get("ts", 0)), float(ev.get("dur", 0)) / 1e6
            out.append((ts, name[: -len(_SUFFIX)], op, seconds))
    return out


def read_trace(component: str, path: Path, first: int = 0, count: int | None = None) -> Trace:
    """Kernel events of session runs ``first`` .. ``first + count - 1`` (all by default)."""
    events = _events(path)
    chosen = _model_runs(events)[first : None if count is None else first + count]
    trace = Trace(component)
    if not chosen:
        return trace
    start, end = chosen[0][0], chosen[-1][0] + chosen[-1][1]
    trace.run_s = sum(dur for _, dur in chosen) / 1e6
    for ts, node, op, seconds in _kernels(events):
        if start <= ts <= end:
            trace.kernels.append((node, op, seconds))
    return trace


def read_runs(component: str, path: Path) -> list[Trace]:
    """One :class:`Trace` per session run of the trace at ``path``, in order (the file is read
    once; kernel events between runs belong to none)."""
    events = _events(path)
    runs = _model_runs(events)
    traces = [Trace(component, run_s=dur / 1e6) for _, dur in runs]
    starts = [start for start, _ in runs]
    for ts, node, op, seconds in _kernels(events):
        i = bisect.bisect_right(starts, ts) - 1
        if i >= 0 and ts <= runs[i][0] + runs[i][1]:
            traces[i].kernels.append((node, op, seconds))
    return traces


def kernel_share(trace: Trace) -> float:
    return sum(s for _, _, s in trace.kernels) / trace.run_s if trace.run_s else 0.0


def resolve_module(node: str, modules: dict[str, str]) -> str | None:
    """The module of a profiled node: its name, else with ONNX Runtime's decorations removed
    (``node_mul_66/QuickGeluFusion/``, ``conv2d_27_nchwc``, ``..._token_12``)."""
    if node in modules:
        return modules[node]
    base = node.split("/", 1)[0]
    for _ in range(3):
        if base in modules:
            return modules[base]
        stripped = _ORT_SUFFIX.sub("", base)
        if stripped == base:
            break
        base = stripped
    return modules.get(base)


def group(traces: list[Trace], modules: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The ``ops`` section of the report from traces and each component's node->module map."""
    profiled = sum(t.run_s for t in traces)
    kernel = sum(s for t in traces for _, _, s in t.kernels)
    by_op: dict[tuple[str, str], list[float]] = {}
    by_module: dict[tuple[str, str], list[float]] = {}
    by_kernel: dict[tuple[str, str], list[float]] = {}
    mapped = 0.0
    for trace in traces:
        table = modules.get(trace.component, {})
        for i, (node, op, seconds) in enumerate(trace.kernels):
            by_op.setdefault((trace.component, op), []).append(seconds)
            if trace.implementations:
                impl = f"{op} [{trace.implementations[i]}]"
                by_kernel.setdefault((trace.component, impl), []).append(seconds)
            module = resolve_module(node, table)
            if module is not None:
                mapped += seconds
            elif op in LAYOUT_OPS:
                module = LAYOUT
            key = (trace.component, module if module is not None else UNMAPPED)
            by_module.setdefault(key, []).append(seconds)

    def rows(table: dict[tuple[str, str], list[float]], modules_too: bool) -> list[dict[str, Any]]:
        out = []
        for (component, name), times in table.items():
            row: dict[str, Any] = {
                "component": component,
                "name": label(name) if modules_too and not name.startswith("(") else name,
                "seconds": sum(times),
                "share": sum(times) / kernel if kernel else 0.0,
                "calls": len(times),
            }
            if modules_too:
                row["module"] = name
            out.append(row)
        return sorted(out, key=lambda r: -r["seconds"])

    out = {
        "profiled_s": profiled,
        "kernel_s": kernel,
        "coverage": kernel / profiled if profiled else 0.0,
        "module_coverage": mapped / kernel if kernel else 0.0,
        "by_op_type": rows(by_op, False),
        "by_module": rows(by_module, True),
    }
    if by_kernel:
        out["by_kernel"] = rows(by_kernel, False)
    return out
