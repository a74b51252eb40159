"""ONNX Runtime CPU engine: graph passes, a numerical check, and recorded session settings."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir
import onnx_ir.passes

from difforge._fs import check_target, staged_folder
from difforge._progress import Reporter, SilentReporter
from difforge.config import BuildConfig
from difforge.engines.ort.divergence import first_divergence
from difforge.engines.passes.fold_constants import FoldConstants
from difforge.engines.passes.ort_fusions import OrtTransformerFusions
from difforge.errors import DifforgeError
from difforge.export.shared_weights import share_weights
from difforge.metrics import compare
from difforge.runtime.manifest import ComponentEntry, Manifest, read_manifest, write_manifest
from difforge.runtime.runners.ort import OrtRunner
from difforge.runtime.step_plan import StepPlan
from difforge.versions import library_versions

EXTERNAL_DATA_BYTES = 1 << 30


def sample_feeds(entry: ComponentEntry, which: str = "opt", seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs at one of the component's profile shapes, from its manifest entry alone."""
    rng = np.random.default_rng(seed)
    index = {"min": 0, "opt": 1, "max": 2}[which]
    sizes = {axis: values[index] for axis, values in entry.axes.items()}
    feeds: dict[str, np.ndarray] = {}
    for tensor in entry.inputs:
        shape = [d if isinstance(d, int) else sizes[d] for d in tensor.shape]
        if tensor.dtype == "int64":
            feeds[tensor.name] = rng.integers(0, 10, size=shape, dtype=np.int64)
        elif tensor.name == "timestep":
            feeds[tensor.name] = (rng.random(shape) * 999).astype(np.float32)
        else:
            feeds[tensor.name] = rng.standard_normal(shape, dtype=np.float32)
    return feeds


def session_settings(threads: int) -> dict[str, Any]:
    return {
        "graph_optimization_level": "all",
        "intra_op_num_threads": threads,
        "inter_op_num_threads": 1,
        "enable_cpu_mem_arena": True,
        "enable_mem_pattern": True,
    }


def optimize_graph(src: Path, dst: Path) -> dict[str, Any]:
    """Run the CPU pass pipeline on one graph; returns what each pass did."""
    model = ir.load(str(src))
    fusions = OrtTransformerFusions()
    passes = [FoldConstants(), fusions]
    manager = onnx_ir.passes.PassManager(passes, steps=1)
    result = manager(model)
    size = sum(
        v.const_value.nbytes
        for v in result.model.graph.initializers.values()
        if v.const_value is not None
    )
    dst.parent.mkdir(parents=True, exist_ok=True)
    if size > EXTERNAL_DATA_BYTES:
        ir.save(result.model, str(dst), external_data=dst.name + ".data")
    else:
        ir.save(result.model, str(dst))
    return {
        "passes": ["fold_constants", "ort_transformer_fusions"],
        "modified": bool(result.modified),
        "fusions": fusions.counts,
    }


def check_equivalent(entry: ComponentEntry, before: Path, after: Path, role: str) -> dict[str, Any]:
    """The optimised graph must compute what the exported one did (same ORT, same inputs)."""
    feeds = sample_feeds(entry, "opt")
    ref = OrtRunner(role, entry, before, session_settings(0)).infer(feeds)
    got = OrtRunner(role, entry, after, session_settings(0)).infer(feeds)
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


def _reshare_variant_weights(manifest: Manifest, root: Path) -> None:
    """Optimising graphs one by one inlines their weights again; store them once more."""
    plan = StepPlan.from_manifest(manifest.step_plan)
    if len(plan.variants) < 2:
        return
    graphs = [root / manifest.components[key].file for key in plan.variants.values()]
    share_weights(graphs)


def build_ort(config: BuildConfig, reporter: Reporter | None = None) -> Path:
    rep = reporter or SilentReporter()
    manifest = read_manifest(config.source, verify=True)
    if manifest.stage != "exported":
        raise DifforgeError(
            f"{config.source} is already a built artifact; build from an export folder"
        )
    if config.threads < 0:
        raise DifforgeError(f"--threads must be 0 (all cores) or more, got {config.threads}")
    check_target(config.output, config.force)
    passes: dict[str, Any] = {}
    with staged_folder(config.output, config.force) as staging:
        for rel in manifest.files:
            if not any(
                rel == c.file or rel.startswith(c.file + ".") for c in manifest.components.values()
            ):
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(config.source / rel, staging / rel)
        for role, entry in manifest.components.items():
            src, dst = config.source / entry.file, staging / entry.file
            if not config.optimize:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                passes[role] = {"passes": [], "modified": False}
                continue
            with rep.task(f"optimise {role} for ONNX Runtime CPU"):
                passes[role] = optimize_graph(src, dst)
                passes[role]["check"] = check_equivalent(entry, src, dst, role)
            fused = (
                ", ".join(f"{v} {k}" for k, v in passes[role]["fusions"].items()) or "no fusions"
            )
            rep.note(f"{role}: {fused}; max relative change {passes[role]['check']['max_rel']:.1e}")
        _reshare_variant_weights(manifest, staging)
        manifest.stage = "built"
        manifest.created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        manifest.versions = {**manifest.versions, **library_versions()}
        manifest.engine = {
            "backend": "ort",
            "providers": ["CPUExecutionProvider"],
            "session": session_settings(config.threads),
            "passes": passes,
        }
        write_manifest(staging, manifest)
    return config.output
