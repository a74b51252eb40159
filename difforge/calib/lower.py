"""Lower one component's graph to a precision, behind its quality gate.

An engine builder calls :func:`lower_graph` with its fp32 graph and a ``finish`` that turns a
lowered ONNX graph into the engine it would ship (an ONNX Runtime session, an OpenVINO compiled
model) and returns a way to run it. The gate then runs that engine, not a stand-in. When the
gate fails, each layer group is lowered alone and measured; with ``sensitivity`` the worst
groups are kept in fp32, one at a time, until the gate passes (the fewest found greedily),
else the build fails naming the bucket and the group that hurts most.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from difforge.artifact.calibration import CalibrationData
from difforge.calib.fp16 import convert_fp16
from difforge.calib.gates import DEFAULT_MIN_COSINE, GateInputs, GateResult, Run
from difforge.calib.groups import FP16_RULES, INT8_RULES, NodePlan, plan_nodes
from difforge.calib.int8 import calibrate_ranges, quantize_int8
from difforge.calib.precision import NEEDS_CALIBRATION
from difforge.errors import DifforgeError

Int8Writer = Callable[[Path, Path, list[str], Iterable[dict[str, np.ndarray]]], None]

#: precisions this module rewrites graphs for; the others are engine settings (bf16 hints)
GRAPH_PRECISIONS = ("int8", "fp16")


@dataclass
class LowerSettings:
    method: str = "minmax"
    min_cosine: float = DEFAULT_MIN_COSINE
    gate: bool = True
    sensitivity: bool = False
    #: a backend's own INT8 quantizer in place of the Q/DQ graph: (fp32 graph, output path,
    #: node names to leave in float, calibration feeds) -> None
    int8_writer: Int8Writer | None = None


@dataclass
class LowerResult:
    """What a lowering did and measured (recorded in the component's engine record)."""

    precision: str
    lowered: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    kept_fp32: list[str] = field(default_factory=list)
    gate: GateResult | None = None
    #: layer group -> lowest bucket cosine with that group alone lowered
    groups: dict[str, float] = field(default_factory=dict)
    method: str = ""
    #: who quantized: ONNX Runtime's Q/DQ tools, or the backend's own quantizer
    quantizer: str = ""

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"precision": self.precision, "nodes_lowered": self.lowered}
        if self.method:
            out["calibration_method"] = self.method
            out["quantizer"] = self.quantizer
        if self.excluded:
            out["left_in_fp32"] = dict(self.excluded)
        if self.kept_fp32:
            out["groups_kept_fp32"] = list(self.kept_fp32)
        if self.groups:
            out["group_sensitivity"] = {k: round(v, 6) for k, v in self.groups.items()}
        out["gate"] = self.gate.to_record() if self.gate is not None else None
        return out


def _write(
    precision: str,
    plan: NodePlan,
    graph: Path,
    out: Path,
    data: CalibrationData | None,
    key: str,
    settings: LowerSettings,
    skip: tuple[str, ...] = (),
) -> None:
    """Write ``graph`` lowered to ``precision`` at ``out``, the groups in ``skip`` kept."""
    if precision == "int8":
        assert data is not None  # checked by lower_graph
        if settings.int8_writer is not None:
            kept = list(plan.excluded) + [n for g in skip for n in plan.groups.get(g, [])]
            settings.int8_writer(graph, out, kept, data.feeds(key, "calibration"))
            return
        # every node subset of this graph shares one calibration run: its ranges file sits
        # beside the fp32 graph (the builder's scratch folder), never in the artifact
        ranges = graph.parent / f".{graph.stem}.{settings.method}.ranges.json"
        if not ranges.is_file():
            calibrate_ranges(graph, data.feeds(key, "calibration"), settings.method, ranges)
        nodes = plan.nodes(skip)
        quantize_int8(graph, out, nodes, settings.method, ranges)
    elif precision == "fp16":
        kept = list(plan.excluded) + [n for g in skip for n in plan.groups.get(g, [])]
        convert_fp16(graph, out, kept)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(graph, out)


def lower_graph(
    key: str,
    precision: str,
    graph: Path,
    out: Path,
    data: CalibrationData | None,
    reference: Run,
    finish: Callable[[Path], Run],
    settings: LowerSettings,
) -> LowerResult:
    """Lower ``graph`` (fp32 ONNX, weights inline) to ``precision`` at ``out``; gate it."""
    if precision in NEEDS_CALIBRATION and (data is None or not data.has(key)):
        raise DifforgeError(
            f"{key}: {precision} needs calibration data (difforge calibrate, or build with "
            "--precision from an export folder: calibration then runs first)"
        )
    if settings.gate and (data is None or not data.has(key)):
        raise DifforgeError(
            f"{key}: the {precision} quality gate needs calibration data to compare against "
            "fp32 (calibrate first, or pass --no-gate)"
        )
    plan = NodePlan()
    if precision in GRAPH_PRECISIONS:
        model = onnx.load(str(graph), load_external_data=False)
        plan = plan_nodes(model, INT8_RULES if precision == "int8" else FP16_RULES)
        if not plan.nodes():
            raise DifforgeError(f"{key}: nothing to lower to {precision} (no weight-bearing ops)")
    result = LowerResult(
        precision=precision,
        lowered=len(plan.nodes()),
        excluded=plan.reasons(),
        method=settings.method if precision == "int8" else "",
        quantizer=("backend" if settings.int8_writer else "onnxruntime")
        if precision == "int8"
        else "",
    )
    _write(precision, plan, graph, out, data, key, settings)
    run = finish(out)
    if not settings.gate:
        return result
    assert data is not None
    inputs = GateInputs(data, key, reference)
    result.gate = inputs.measure(run, settings.min_cosine)
    if result.gate.passed:
        return result
    if not plan.groups:  # an engine setting (bf16): nothing to keep in fp32 group by group
        raise _gate_error(key, precision, result.gate, None, None)
    everything = tuple(plan.groups)
    for group in everything:
        others = tuple(g for g in everything if g != group)
        _write(precision, plan, graph, out, data, key, settings, others)
        result.groups[group] = inputs.measure(finish(out), settings.min_cosine).lowest
    worst = sorted(result.groups, key=lambda g: result.groups[g])
    if not settings.sensitivity:
        raise _gate_error(key, precision, result.gate, worst[0], result.groups[worst[0]])
    for group in worst[:-1]:  # keeping every group would ship fp32 under another name
        result.kept_fp32.append(group)
        _write(precision, plan, graph, out, data, key, settings, tuple(result.kept_fp32))
        run = finish(out)
        result.gate = inputs.measure(run, settings.min_cosine)
        if result.gate.passed:
            result.lowered = len(plan.nodes(tuple(result.kept_fp32)))
            return result
    raise _gate_error(key, precision, result.gate, worst[0], result.groups[worst[0]], kept=True)


def _gate_error(
    key: str,
    precision: str,
    gate: GateResult,
    group: str | None,
    alone: float | None,
    kept: bool = False,
) -> DifforgeError:
    bucket = gate.failing[0]
    text = (
        f"{key}: {precision} misses the quality gate in timestep bucket {bucket} "
        f"(mean cosine {gate.mean[bucket]:.4f} < {gate.threshold}; all buckets: "
        f"{gate.describe()})"
    )
    if kept:
        text += "; with all but one layer group kept in fp32 it still fails: build it in fp32"
    elif group is not None and alone is not None:
        text += f"; the layer group that hurts most is {group} (lowest {alone:.4f} alone)"
        text += "; rebuild with --sensitivity to keep the fewest groups in fp32, or --no-gate"
    else:
        text += "; rebuild with --no-gate to ship it anyway"
    return DifforgeError(text)
