"""Benchmark of the attention and convolution patches (issues 4 and 5) on ONNX Runtime CPU.

Usage: python scripts/bench_patches.py [--quick] [--out docs/perf-patches.md] [--work DIR]

Issue 4, attention scaling, at 32², 64², 96², 128² latent tokens (``--quick``: 32², 64²):

* tiny-sd U-Net (latent = token grid at its top level) with full attention and with
  ``--patch linfusion``, each exported once with a dynamic latent range and run through the
  ONNX Runtime builder's ``optimize_graph`` passes (difforge's built graph); PyTorch eager full
  attention on the same U-Net, ``torch.set_num_threads(2)``;
* tiny-dit (patch 2, latent = 2 × token grid) through ``DiTExportWrapper``, dynamic square size,
  full attention and ``--patch clear:radius=8`` / ``clear:radius=16`` (the
  ``difforge::LocalAttention2D`` fallback function, inlined by ONNX Runtime).

For each: (a) the self-attention time from ONNX Runtime's per-node profile: every profiled node
whose ``pkg.torch.onnx.name_scopes`` metadata puts it in an ``attn1`` module, split into the
attention core (``MultiHeadAttention``; LinFusion's elu/matmul/normalisation nodes; CLEAR's
fallback nodes) and the q/k/v/out projections (plus LinFusion's q/k MLPs); (b) the whole
denoiser call, batch 1, median of alternating runs after warm-up. Time ∝ N^e is fitted by
least squares on logs (N = tokens).

Issue 5: ``tiny-lk-unet`` before/after ``--patch reparam`` and tiny-sd plain against its
``redilate:scale=2`` ``redilated`` variant, 64² latents, alternating, as ratios.

Everything runs with ``intra_op_num_threads=2``. Not a test: numbers depend on the machine
and its load, which the report records.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "patches"))  # DiTExportWrapper, spatial_dims

THREADS = 2
SIZES_FULL = (32, 64, 96, 128)
SIZES_QUICK = (32, 64)
#: Targets from issue 4.
TARGET_EXPONENT = 1.15
TARGET_SPEEDUP = 3.0
#: A (variant, size) whose predicted call time exceeds this is skipped, not run.
MAX_CALL_S = 60.0


# --------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_tile")
    from difforge.versions import library_versions

    versions = library_versions()
    versions["numpy"] = np.__version__
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "flags": [f for f in wanted if f in flags],
        "no_flags": [f for f in wanted if f not in flags],
        "platform": platform.platform(),
        "versions": versions,
    }


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


# --------------------------------------------------------------------------- graphs


@dataclass
class Graph:
    """One ONNX graph to time: its file and how to make its inputs at a latent size."""

    label: str
    path: Path
    feeds: Callable[[int], dict[str, np.ndarray]]
    #: Latent side for a token side (tiny-sd: 1, DiT with patch 2: 2).
    latent_per_token: int = 1
    build_s: float = 0.0


def _unet_feeds(latent: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "sample": rng.standard_normal((1, 4, latent, latent), dtype=np.float32),
        "timestep": np.array([500.0], dtype=np.float32),
        "encoder_hidden_states": rng.standard_normal((1, 77, 64), dtype=np.float32),
    }


def _dit_feeds(latent: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "sample": rng.standard_normal((1, 4, latent, latent), dtype=np.float32),
        "timestep": np.array([500], dtype=np.int64),
        "class_labels": np.array([3], dtype=np.int64),
    }


def _quiet_export() -> Any:
    import contextlib
    import io
    import logging

    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    stack.callback(logger.setLevel, level)
    return stack


def _optimize(raw: Path, dst: Path) -> None:
    from difforge.engines.ort.builder import optimize_graph

    optimize_graph(raw, dst)


def export_sd_denoiser(
    preset: str,
    patch: str | None,
    latent_range: tuple[int, int, int],
    dst: Path,
    variant: str | None = None,
) -> None:
    """A U-Net preset's denoiser as difforge exports it, then the ORT builder's passes."""
    from difforge.config import ResolutionRange
    from difforge.export.components import components_for
    from difforge.export.exporter import resolve_resolution
    from difforge.export.onnx_export import export_component
    from difforge.export.patches import create_patch
    from difforge.export.sources.presets import load_preset

    source = load_preset(preset)
    f = source.vae_scale_factor
    lo, opt, hi = (v * f for v in latent_range)
    wanted = ResolutionRange(min=lo, default=opt, max=hi)
    source = replace(source, resolution=resolve_resolution(source.resolution, wanted))
    if patch is not None:
        applied = create_patch(patch)
        applied.apply(source.denoiser)
        if variant is not None:
            applied.set_variant(variant)
    component = components_for(source, max_batch=1)["denoiser"]
    raw = dst.with_name(dst.stem + ".raw.onnx")
    with _quiet_export():
        export_component(component, raw)
    _optimize(raw, dst)
    raw.unlink()


def export_dit_denoiser(patch: str | None, token_range: tuple[int, int], dst: Path) -> None:
    """tiny-dit through DiTExportWrapper with a dynamic square size, then the ORT passes."""
    import onnx
    from patch_testing import DiTExportWrapper, spatial_dims

    from difforge.export.onnx_export import custom_translations
    from difforge.export.patches import create_patch
    from difforge.export.sources.presets import load_preset

    dit = load_preset("tiny-dit").denoiser
    if patch is not None:
        create_patch(patch).apply(dit)
    wrapper = DiTExportWrapper(dit).eval()
    lo, hi = token_range
    (side,) = spatial_dims("s", multiple=2, lo=lo, hi=hi)  # latent = 2 * tokens per side
    args = (torch.randn(1, 4, 2 * lo, 2 * lo), torch.tensor([500]), torch.tensor([3]))
    with _quiet_export():
        program = torch.onnx.export(
            wrapper,
            args,
            dynamo=True,
            input_names=["sample", "timestep", "class_labels"],
            output_names=["noise_pred"],
            dynamic_shapes={"sample": {2: side, 3: side}, "timestep": None, "class_labels": None},
            custom_translation_table=custom_translations() or None,
            verbose=False,
        )
    assert program is not None
    model = program.model_proto
    if any(node.domain == "difforge" for node in model.graph.node):
        from difforge.plugins.onnx_ops import attach_fallback_functions

        model = attach_fallback_functions(model)
    raw = dst.with_name(dst.stem + ".raw.onnx")
    onnx.save(model, str(raw))
    _optimize(raw, dst)
    raw.unlink()


def build(
    label: str, path: Path, make: Callable[[Path], None], log: Callable[[str], None]
) -> float:
    if path.exists():
        log(f"  {label}: reusing {path}")
        return 0.0
    start = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    make(path)
    took = time.perf_counter() - start
    log(f"  {label}: exported and optimised in {took:.1f} s")
    return took


# --------------------------------------------------------------------------- sessions


def session(path: Path, profile_prefix: str | None = None) -> Any:
    import onnxruntime as ort

    from difforge.engines.ort.builder import session_settings
    from difforge.runtime.runners.ort import session_options

    settings = session_settings(THREADS)
    if profile_prefix:
        settings["profile_prefix"] = profile_prefix
    return ort.InferenceSession(
        str(path), sess_options=session_options(settings), providers=["CPUExecutionProvider"]
    )


def timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1e3


# --------------------------------------------------------------------------- profile


def node_scopes(path: Path) -> dict[str, list[str]]:
    """Graph node name -> its PyTorch module scopes (from the exporter's metadata)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    out: dict[str, list[str]] = {}
    for node in model.graph.node:
        for prop in node.metadata_props:
            if prop.key == "pkg.torch.onnx.name_scopes":
                out[node.name] = list(ast.literal_eval(prop.value))
    return out


def classify(scopes: list[str] | None) -> str:
    """'core' | 'proj' for a node inside a self-attention (attn1) module, else 'other'."""
    if not scopes:
        return "other"
    modules = scopes[:-1]  # the last entry is the fx node's own name
    attn = [m for m in modules if m.endswith(".attn1")]
    if not attn:
        return "other"
    inner = modules[-1][len(attn[-1]) :]
    return "core" if inner in ("", ".processor") else "proj"


def _lookup(name: str, scopes: dict[str, list[str]]) -> list[str] | None:
    if name in scopes:
        return scopes[name]
    for suffix in ("_nchwc",):
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            return scopes.get(base) or scopes.get("node_" + base)
    return None


#: Kernel ms per ONNX Runtime op type whose node the profile could not map to a module.
UNMAPPED: Counter[str] = Counter()


def attention_per_run(trace: Path, scopes: dict[str, list[str]]) -> list[dict[str, float]]:
    """Per model run: ms of self-attention core, its projections, and all kernels."""
    events = json.loads(trace.read_text())
    runs = sorted(
        (e["ts"], e["ts"] + e["dur"])
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    out = [{"core": 0.0, "proj": 0.0, "kernels": 0.0, "unmapped": 0.0} for _ in runs]
    starts = [r[0] for r in runs]
    import bisect

    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        i = bisect.bisect_right(starts, e["ts"]) - 1
        if i < 0 or e["ts"] > runs[i][1]:
            continue
        ms = e["dur"] / 1e3
        name = e["name"][: -len("_kernel_time")]
        sc = _lookup(name, scopes)
        out[i]["kernels"] += ms
        if sc is None:
            out[i]["unmapped"] += ms
            UNMAPPED[str(e.get("args", {}).get("op_name", "?"))] += ms
        kind = classify(sc)
        if kind != "other":
            out[i][kind] += ms
    return out


# --------------------------------------------------------------------------- fits


def fit_exponent(sizes: Sequence[float], times: Sequence[float]) -> float | None:
    pts = [(math.log(n), math.log(t)) for n, t in zip(sizes, times, strict=True) if t > 0]
    if len(pts) < 2:
        return None
    xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    slope, _ = np.polyfit(xs, ys, 1)
    return float(slope)


# --------------------------------------------------------------------------- measurement


@dataclass
class Cell:
    latency: list[float] = field(default_factory=list)
    core: list[float] = field(default_factory=list)
    proj: list[float] = field(default_factory=list)
    unmapped: list[float] = field(default_factory=list)
    skipped: str | None = None

    def med(self, what: str) -> float | None:
        values: list[float] = getattr(self, what)
        return statistics.median(values) if values else None


Runner = Callable[[int], Callable[[], Any]]


def ort_runner(graph: Graph, sess: Any) -> Runner:
    def at(tokens: int) -> Callable[[], Any]:
        feeds = graph.feeds(tokens * graph.latent_per_token)
        return lambda: sess.run(None, feeds)

    return at


def eager_runner(unet: torch.nn.Module) -> Runner:
    def at(tokens: int) -> Callable[[], Any]:
        feeds = {k: torch.from_numpy(v) for k, v in _unet_feeds(tokens).items()}

        def call() -> Any:
            with torch.inference_mode():
                return unet(feeds["sample"], feeds["timestep"], feeds["encoder_hidden_states"])

        return call

    return at


def measure_group(
    names: list[str],
    runners: dict[str, Runner],
    sizes: Sequence[int],
    runs: int,
    cells: dict[tuple[str, int], Cell],
    log: Callable[[str], None],
) -> None:
    """Latency: per size, one warm-up each, then ``runs`` rounds alternating the variants."""
    last: dict[str, tuple[int, float]] = {}
    for tokens in sizes:
        calls: dict[str, Callable[[], Any]] = {}
        for name in names:
            cell = cells.setdefault((name, tokens), Cell())
            if name in last:  # predict with a quadratic worst case before committing
                prev_tokens, prev_ms = last[name]
                predicted = prev_ms * (tokens / prev_tokens) ** 4 / 1e3
                if predicted > MAX_CALL_S:
                    cell.skipped = f"skipped: predicted {predicted:.0f} s per call"
                    continue
            try:
                call = runners[name](tokens)
                warm = timed(call)
            except Exception as exc:  # out of memory etc.: record it, keep going
                cell.skipped = f"failed: {type(exc).__name__}: {str(exc)[:120]}"
                log(f"    {name} @ {tokens}²: {cell.skipped}")
                continue
            calls[name] = call
            last[name] = (tokens, warm)
        for _ in range(runs):
            for name, call in calls.items():
                cells[(name, tokens)].latency.append(timed(call))
        summary = ", ".join(
            f"{n} {statistics.median(cells[(n, tokens)].latency):.1f} ms" for n in calls
        )
        log(f"    {tokens}² tokens: {summary}")


def profile_graph(
    graph: Graph,
    sizes: Sequence[int],
    runs: int,
    cells: dict[tuple[str, int], Cell],
    work: Path,
) -> None:
    """Attention time per size from ONNX Runtime's profiler (one warm-up run per size)."""
    todo = [t for t in sizes if not cells.get((graph.label, t), Cell()).skipped]
    if not todo:
        return
    sess = session(graph.path, str(work / f"profile-{graph.label}"))
    order: list[int | None] = []
    for tokens in todo:
        feeds = graph.feeds(tokens * graph.latent_per_token)
        sess.run(None, feeds)
        order.append(None)
        for _ in range(runs):
            sess.run(None, feeds)
            order.append(tokens)
    trace = Path(sess.end_profiling())
    per_run = attention_per_run(trace, node_scopes(graph.path))
    if len(per_run) != len(order):
        raise RuntimeError(f"{graph.label}: {len(per_run)} profiled runs, expected {len(order)}")
    for tokens, run in zip(order, per_run, strict=True):
        if tokens is None:
            continue
        cell = cells[(graph.label, tokens)]
        cell.core.append(run["core"])
        cell.proj.append(run["proj"])
        cell.unmapped.append(run["unmapped"] / max(run["kernels"], 1e-9))
    trace.unlink(missing_ok=True)


# --------------------------------------------------------------------------- report


def _ms(value: float | None) -> str:
    return "—" if value is None else (f"{value:.1f}" if value >= 10 else f"{value:.2f}")


def _e(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def attention_table(
    variants: list[tuple[str, str]],
    sizes: Sequence[int],
    cells: dict[tuple[str, int], Cell],
    exponents: dict[str, dict[str, float | None]],
) -> list[str]:
    head = "| variant | measure | " + " | ".join(f"{s}² ({s * s})" for s in sizes) + " | e |"
    lines = [head, "|---|---|" + "---:|" * (len(sizes) + 1)]
    for key, title in variants:
        rows = [("denoiser ms", "latency"), ("attn core ms", "core"), ("attn proj ms", "proj")]
        for label, what in rows:
            values = []
            for s in sizes:
                cell = cells.get((key, s), Cell())
                values.append(cell.skipped.split(":")[0] if cell.skipped else _ms(cell.med(what)))
            if key == "eager" and what != "latency":
                continue
            expo = _e(exponents.get(key, {}).get(what))
            lines.append(f"| {title} | {label} | " + " | ".join(values) + f" | {expo} |")
    return lines


def render(result: dict[str, Any]) -> str:
    m = result["machine"]
    sizes = result["sizes"]
    cells: dict[tuple[str, int], Cell] = result["cells"]
    exps = result["exponents"]
    load0, load1 = result["load_start"], result["load_end"]
    loaded = max(load0[0], load1[0]) > 1.5
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    out = [
        "# Patch benchmarks (issues 4 and 5)",
        "",
        "Generated by `scripts/bench_patches.py"
        + (" --quick" if result["quick"] else "")
        + "`; do not edit by hand.",
        "",
        "## Machine",
        "",
        f"- date: {result['date']} (run took {result['wall_s'] / 60:.1f} min)",
        f"- CPU: {m['cpu']}, {m['cores']} logical cores; flags: {' '.join(m['flags'])}"
        + (f"; absent: {' '.join(m['no_flags'])}" if m["no_flags"] else ""),
        f"- ONNX Runtime CPU, intra_op_num_threads={THREADS}, inter_op=1, graph optimisation "
        f"level all; PyTorch eager with torch.set_num_threads({THREADS})",
        f"- {versions}",
        f"- load average (1/5/15 min): start {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}, "
        f"end {load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f}"
        + (
            " — **taken under load** (the machine is shared with other work; above 1.5 on "
            "2 cores, absolute times are inflated and noisy, ratios less so)"
            if loaded
            else ""
        ),
        f"- latency: batch 1, median of {result['runs']} runs after one warm-up, variants "
        f"alternating per round; attention: median over {result['profile_runs']} profiled "
        "runs after one warm-up, in a separate profiling session",
        "",
        "## Issue 4: attention scaling",
        "",
        "N = latent tokens (tiny-sd: the U-Net's top level, latent side = token side; tiny-dit: "
        "patch 2, latent side = 2 × token side). Times in ms. *attn core* sums ONNX Runtime's "
        "per-node kernel times of the nodes whose exporter metadata places them in a "
        "self-attention (`attn1`) module outside its projections: the `MultiHeadAttention` "
        "contrib op for full attention, the elu/matmul/normalisation nodes for LinFusion, "
        "the inlined `difforge::LocalAttention2D` fallback for CLEAR. *attn proj* is the "
        "q/k/v/out projections of the same modules (and LinFusion's q/k MLPs). "
        "e: least-squares slope of log time on log N.",
        "",
        "### tiny-sd U-Net",
        "",
        *attention_table(
            [
                ("sd-full", "full attention (difforge artifact)"),
                ("sd-linfusion", "LinFusion"),
                ("eager", "PyTorch eager, full attention"),
            ],
            sizes,
            cells,
            exps,
        ),
        "",
        "### tiny-dit",
        "",
        *attention_table(
            [
                ("dit-full", "full attention"),
                ("dit-clear8", "CLEAR r=8"),
                ("dit-clear16", "CLEAR r=16"),
            ],
            sizes,
            cells,
            exps,
        ),
        "",
        "Nodes without exporter metadata (made by ONNX Runtime's own fusions, or by the "
        "builder's passes) cannot be placed in a module and count in neither attention column: "
        f"at most {result['max_unmapped'] * 100:.1f}% of a run's kernel time; by op type "
        f"(ms, all profiled runs): {result['unmapped_ops']}.",
        "",
        "### Targets",
        "",
        *[f"- {line}" for line in result["verdicts"]],
        "",
        "PyTorch eager runs diffusers' `AttnProcessor2_0` (`scaled_dot_product_attention`). "
        "tiny-sd's self-attention has 8 heads of 4 channels at its top level (32 channels), a "
        "shape on which every attention kernel is memory-bound, so full attention dominates "
        "both the eager and the ONNX Runtime call from 64² on.",
        "",
        "## Issue 5: convolution patches (64² latents, ONNX Runtime CPU)",
        "",
        "| comparison | before ms | after ms | after / before |",
        "|---|---:|---:|---:|",
        *result["conv_rows"],
        "",
        *[f"- {line}" for line in result["conv_notes"]],
        "",
        "## Builds",
        "",
        "| graph | export + optimise s |",
        "|---|---:|",
        *[
            f"| {k} | {f'{v:.1f}' if v else 'reused from an earlier run (--work)'} |"
            for k, v in result["builds"].items()
        ],
        "",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def verdicts(
    sizes: Sequence[int], cells: dict[tuple[str, int], Cell], exps: dict[str, dict[str, Any]]
) -> list[str]:
    out: list[str] = []
    for key, title in (
        ("sd-linfusion", "LinFusion"),
        ("dit-clear8", "CLEAR r=8"),
        ("dit-clear16", "CLEAR r=16"),
    ):
        e = exps.get(key, {}).get("core")
        if e is None:
            out.append(f"{title} attention e ≤ {TARGET_EXPONENT}: not measured")
            continue
        met = e <= TARGET_EXPONENT
        tail = ""
        if not met and len(sizes) > 2:
            rest = [(t * t, cells[(key, t)].med("core")) for t in sizes[1:]]
            pts = [(n, v) for n, v in rest if v is not None]
            e_tail = fit_exponent([n for n, _ in pts], [v for _, v in pts])
            tail = (
                f"; without the smallest size, e = {_e(e_tail)} over "
                f"{sizes[1]}²–{sizes[-1]}²: at {sizes[0]}² the attention core takes a few ms, "
                "within the noise of a loaded machine, and its working set still fits in cache"
            )
        out.append(
            f"{title} attention e ≤ {TARGET_EXPONENT}: **{'met' if met else 'not met'}** "
            f"(e = {e:.2f} over {sizes[0]}²–{sizes[-1]}²; whole denoiser "
            f"e = {_e(exps[key].get('latency'))}{tail})"
        )
    top = sizes[-1]
    lin = cells.get(("sd-linfusion", top), Cell()).med("latency")
    for key, title in (
        ("sd-full", "difforge's full-attention artifact"),
        ("eager", "PyTorch eager"),
    ):
        ref = cells.get((key, top), Cell()).med("latency")
        if lin is None or ref is None:
            out.append(
                f"LinFusion ≥ {TARGET_SPEEDUP:g}× faster than {title} at {top}²: not measured"
            )
            continue
        speed = ref / lin
        met = speed >= TARGET_SPEEDUP
        note = "" if top == 128 else f" (only up to {top}² in this run; the target is at 128²)"
        why = ""
        lin_core = cells[("sd-linfusion", top)].med("core")
        if not met and lin_core is not None:
            rest = lin - lin_core
            why = (
                f" — outside its attention core LinFusion's call still takes {rest:.0f} ms "
                "(convolutions, norms, projections, feed-forwards, the lower levels), which "
                f"alone caps the speed-up at {ref / rest:.1f}× at this size"
            )
        out.append(
            f"LinFusion denoiser ≥ {TARGET_SPEEDUP:g}× faster than {title} at {top}²: "
            f"**{'met' if met else 'not met'}** ({speed:.2f}×: {ref:.0f} ms vs {lin:.0f} ms)"
            f"{note}{why}"
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two sizes (32², 64²)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "perf-patches.md")
    parser.add_argument("--work", type=Path, default=None, help="keep (and reuse) graphs here")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per cell (≥ 5)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    load_start = load_average()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", flush=True)

    torch.set_num_threads(THREADS)
    sizes = SIZES_QUICK if args.quick else SIZES_FULL
    runs = max(args.runs, 5)
    profile_runs = 2 if args.quick else 3
    lo, hi = sizes[0], sizes[-1]
    opt = sizes[len(sizes) // 2]
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-patches-"))
    tag = f"{lo}-{hi}"
    log(f"load average {load_start}; graphs in {work}")

    graphs: dict[str, Graph] = {
        "sd-full": Graph("sd-full", work / f"sd-full-{tag}.onnx", _unet_feeds),
        "sd-linfusion": Graph("sd-linfusion", work / f"sd-linfusion-{tag}.onnx", _unet_feeds),
        "dit-full": Graph("dit-full", work / f"dit-full-{tag}.onnx", _dit_feeds, 2),
        "dit-clear8": Graph("dit-clear8", work / f"dit-clear8-{tag}.onnx", _dit_feeds, 2),
        "dit-clear16": Graph("dit-clear16", work / f"dit-clear16-{tag}.onnx", _dit_feeds, 2),
        "lk-plain": Graph("lk-plain", work / "lk-plain-64.onnx", _unet_feeds),
        "lk-reparam": Graph("lk-reparam", work / "lk-reparam-64.onnx", _unet_feeds),
        "sd-plain64": Graph("sd-plain64", work / "sd-plain-64.onnx", _unet_feeds),
        "sd-redilated64": Graph("sd-redilated64", work / "sd-redilated-64.onnx", _unet_feeds),
    }
    makers: dict[str, Callable[[Path], None]] = {
        "sd-full": lambda p: export_sd_denoiser("tiny-sd", None, (lo, opt, hi), p),
        "sd-linfusion": lambda p: export_sd_denoiser("tiny-sd", "linfusion", (lo, opt, hi), p),
        "dit-full": lambda p: export_dit_denoiser(None, (lo, hi), p),
        "dit-clear8": lambda p: export_dit_denoiser("clear:radius=8", (lo, hi), p),
        "dit-clear16": lambda p: export_dit_denoiser("clear:radius=16", (lo, hi), p),
        "lk-plain": lambda p: export_sd_denoiser("tiny-lk-unet", None, (64, 64, 64), p),
        "lk-reparam": lambda p: export_sd_denoiser("tiny-lk-unet", "reparam", (64, 64, 64), p),
        "sd-plain64": lambda p: export_sd_denoiser(
            "tiny-sd", "redilate:scale=2", (64, 64, 64), p, variant="base"
        ),
        "sd-redilated64": lambda p: export_sd_denoiser(
            "tiny-sd", "redilate:scale=2", (64, 64, 64), p, variant="redilated"
        ),
    }
    log("building graphs (export + ORT builder passes)")
    builds: dict[str, float] = {}
    for key, graph in graphs.items():
        graph.build_s = build(key, graph.path, makers[key], log)
        builds[key] = graph.build_s

    cells: dict[tuple[str, int], Cell] = {}
    log("tiny-sd: latency (ORT full, ORT LinFusion, PyTorch eager full), alternating")
    from difforge.export.components import UNetDenoiser
    from difforge.export.sources.presets import load_preset

    eager = UNetDenoiser(load_preset("tiny-sd").denoiser).eval()
    sd_sessions = {k: session(graphs[k].path) for k in ("sd-full", "sd-linfusion")}
    runners: dict[str, Runner] = {k: ort_runner(graphs[k], s) for k, s in sd_sessions.items()}
    runners["eager"] = eager_runner(eager)
    measure_group(["sd-full", "sd-linfusion", "eager"], runners, sizes, runs, cells, log)
    del sd_sessions, runners, eager

    log("tiny-dit: latency (full, CLEAR r=8, CLEAR r=16), alternating")
    dit_keys = ["dit-full", "dit-clear8", "dit-clear16"]
    dit_runners: dict[str, Runner] = {
        k: ort_runner(graphs[k], session(graphs[k].path)) for k in dit_keys
    }
    measure_group(dit_keys, dit_runners, sizes, runs, cells, log)
    del dit_runners

    log("attention time from ONNX Runtime's profiler")
    for key in ("sd-full", "sd-linfusion", *dit_keys):
        profile_graph(graphs[key], sizes, profile_runs, cells, work)
        core = ", ".join(_ms(cells[(key, s)].med("core")) for s in sizes)
        log(f"  {key}: attention core ms {core}")

    tokens = [s * s for s in sizes]
    exps: dict[str, dict[str, float | None]] = {}
    for key in ("sd-full", "sd-linfusion", "eager", *dit_keys):
        exps[key] = {}
        for what in ("latency", "core", "proj"):
            pts = [
                (n, v)
                for n, s in zip(tokens, sizes, strict=True)
                if (v := cells.get((key, s), Cell()).med(what)) is not None
            ]
            exps[key][what] = fit_exponent([p[0] for p in pts], [p[1] for p in pts])

    log("issue 5: 64² latents, alternating")
    conv_rows: list[str] = []
    conv_notes: list[str] = []
    conv_cells: dict[tuple[str, int], Cell] = {}
    pairs = [
        ("lk-plain", "lk-reparam", "tiny-lk-unet: plain → `--patch reparam`"),
        ("sd-plain64", "sd-redilated64", "tiny-sd: plain → `redilate:scale=2` (redilated)"),
    ]
    conv_runners: dict[str, Runner] = {}
    for a, b, _ in pairs:
        for k in (a, b):
            conv_runners[k] = ort_runner(graphs[k], session(graphs[k].path))
    measure_group(
        [k for a, b, _ in pairs for k in (a, b)], conv_runners, [64], max(runs, 7), conv_cells, log
    )
    for a, b, title in pairs:
        before, after = conv_cells[(a, 64)].med("latency"), conv_cells[(b, 64)].med("latency")
        ratio = "—" if before is None or after is None else f"{after / before:.2f}"
        conv_rows.append(f"| {title} | {_ms(before)} | {_ms(after)} | {ratio} |")
    conv_notes.append(
        "reparam merges each UniRepLKNet dilated reparam block (K=13 plus its dilated branches "
        "and BatchNorms) into one depthwise conv; InceptionNeXt mixers stay split on CPU "
        "(`fold_inception=auto`)."
    )
    conv_notes.append(
        "redilate: the `redilated` variant runs for steps i < τ; its convs use dilation 2 on the "
        "same weights, so the same FLOPs: the ratio is the cost of the dilated kernels."
    )

    load_end = load_average()
    max_unmapped = max((v for c in cells.values() for v in c.unmapped), default=0.0)
    result = {
        "machine": machine_info(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "sizes": list(sizes),
        "runs": runs,
        "profile_runs": profile_runs,
        "cells": cells,
        "exponents": exps,
        "verdicts": verdicts(sizes, cells, exps),
        "conv_rows": conv_rows,
        "conv_notes": conv_notes,
        "builds": builds,
        "load_start": load_start,
        "load_end": load_end,
        "max_unmapped": max_unmapped,
        "unmapped_ops": ", ".join(f"{k} {v:.0f}" for k, v in UNMAPPED.most_common(6)) or "none",
        "wall_s": time.perf_counter() - started,
    }
    text = render(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    log(f"wrote {args.out}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
