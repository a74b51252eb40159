"""ONNX Runtime CPU engine: graph passes, a numerical check, and recorded session settings."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import onnx_ir as ir

from difforge.artifact.feeds import sample_feeds
from difforge.artifact.manifest import CUSTOM_OP_DOMAIN, ComponentEntry
from difforge.artifact.weights import graph_files
from difforge.calib.gates import onnx_run
from difforge.engines import register_builder
from difforge.engines.base import ComponentBuild, EngineBuilder
from difforge.engines.ort.divergence import first_divergence
from difforge.errors import DifforgeError
from difforge.metrics import compare
from difforge.passes import get_pass
from difforge.passes.base import GraphPass

EXTERNAL_DATA_BYTES = 1 << 30


def session_settings(threads: int) -> dict[str, Any]:
    """What the runner's session applies (recorded in each component's engine record)."""
    return {
        "providers": ["CPUExecutionProvider"],
        "graph_optimization_level": "all",
        "intra_op_num_threads": threads,
        "inter_op_num_threads": 1,
        "enable_cpu_mem_arena": True,
        "enable_mem_pattern": True,
    }


def cpu_passes(keep: tuple[str, ...] = ()) -> list[GraphPass]:
    """The CPU pass pipeline; ``keep`` names custom-op domains left as plugin nodes."""
    return [
        get_pass("inline_functions", keep=keep),
        get_pass("fold_constants"),
        get_pass("ort_fusions", keep=keep),
    ]


def optimize_graph(src: Path, dst: Path, passes: list[GraphPass]) -> list[GraphPass]:
    """Run ``passes`` on one graph and save it (weights inline up to 1 GiB); returns them."""
    model = ir.load(str(src))
    for graph_pass in passes:
        graph_pass(model)
    size = sum(
        v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None
    )
    dst.parent.mkdir(parents=True, exist_ok=True)
    if size > EXTERNAL_DATA_BYTES:
        ir.save(model, str(dst), external_data=dst.name + ".data")
    else:
        ir.save(model, str(dst))
    return passes


def check_equivalent(entry: ComponentEntry, before: Path, after: Path, role: str) -> dict[str, Any]:
    """The optimised graph must compute what the exported one did (same ORT, same inputs)."""
    feeds = sample_feeds(entry, "opt")
    ref, got = onnx_run(str(before))(feeds), onnx_run(str(after))(feeds)
    worst: dict[str, Any] = {"max_rel": 0.0, "max_abs": 0.0}
    for name, value in ref.items():
        errors = compare(value, got[name])
        if errors["max_rel"] > worst["max_rel"]:
            worst = errors
        if not errors["max_rel"] <= entry.tolerance:
            found = first_divergence(before, after, feeds, entry.tolerance)
            where = f"; {found.describe()}" if found is not None else ""
            raise DifforgeError(
                f"optimised {role}.{name} differs from the exported graph by "
                f"{errors['max_rel']:.2e} relative (tolerance {entry.tolerance:.0e}){where}; "
                "rebuild with --no-optimize and report this"
            )
    return worst


def graph_requires(path: Path) -> dict[str, Any]:
    """The opsets a built graph imports and the ops it uses (its functions' bodies included)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    local = {(f.domain, f.name) for f in model.functions}

    def name(domain: str) -> str:
        return domain or "ai.onnx"

    nodes = list(model.graph.node) + [n for f in model.functions for n in f.node]
    ops = {f"{name(n.domain)}::{n.op_type}" for n in nodes if (n.domain, n.op_type) not in local}
    return {
        "opsets": {name(o.domain): int(o.version) for o in model.opset_import},
        "ops": sorted(ops),
    }


@register_builder
class OrtBuilder(EngineBuilder):
    """Graph passes for ONNX Runtime's CPU provider; custom ops inlined unless kept."""

    backend = "ort"
    precisions = ("fp32", "fp16", "int8")

    def build_component(
        self, role: str, entry: ComponentEntry, src: Path, dst: Path
    ) -> ComponentBuild:
        done = self._build(role, entry, src, dst)
        done.requires = graph_requires(dst)
        return done

    def _build(self, role: str, entry: ComponentEntry, src: Path, dst: Path) -> ComponentBuild:
        done = self._build_fp32(role, entry, src, dst)
        if self.precision_of(role) == "fp32":
            return done
        with tempfile.TemporaryDirectory(dir=dst.parent.parent) as tmp:
            fp32 = Path(tmp) / dst.name
            for name in graph_files(dst, dst.parent):
                shutil.move(dst.parent / name, Path(tmp) / name)
            result = self.lower(role, src, fp32, dst, lambda path: onnx_run(str(path)))
        done.quality = result.record()
        return done

    def _build_fp32(
        self, role: str, entry: ComponentEntry, src: Path, dst: Path
    ) -> ComponentBuild:
        settings = session_settings(self.config.threads)
        if not self.config.optimize:
            dst.parent.mkdir(parents=True, exist_ok=True)
            for name in graph_files(src, src.parent):  # the graph and its external data
                shutil.copyfile(src.parent / name, dst.parent / name)
            return ComponentBuild(settings=settings)
        keep = (CUSTOM_OP_DOMAIN,) if self.custom_ops == "plugin" else ()
        with self.rep.task(f"optimise {role} for ONNX Runtime CPU"):
            passes = optimize_graph(src, dst, cpu_passes(keep))
            check = check_equivalent(entry, src, dst, role)
        fusions: dict[str, int] = next(
            (p.details["fusions"] for p in passes if p.name == "ort_fusions"), {}
        )
        fused = ", ".join(f"{v} {k}" for k, v in fusions.items()) or "no fusions"
        self.rep.note(f"{role}: {fused}; max relative change {check['max_rel']:.1e}")
        return ComponentBuild(settings, [p.record() for p in passes], check)
