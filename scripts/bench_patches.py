"""Benchmark of the attention and convolution patches (issues 4 and 5) on ONNX Runtime CPU.

Issue 4, at 32²–128² latent tokens N (``--quick``: 32², 64²), tiny-sd's U-Net (full attention,
``linfusion``, PyTorch eager) and tiny-dit (full, ``clear:radius=8``/``16``; an artifact per
size, as diffusers' DiT runs at one size): the self-attention (``attn1``) core and projection
time in ONNX Runtime's per-node profile, the whole denoiser call, time ∝ N^e. Issue 5, at 64²:
``tiny-lk-unet`` before/after ``reparam``; ``redilate:scale=2``'s plain vs redilated graph.

A thin driver: artifacts from ``difforge.compile``, calls through the runtime's runners,
attention time from ``difforge.profile.attention``, statistics from ``difforge.profile.stats``;
2 intra-op threads. Not a test: the numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import difforge
from difforge.artifact.feeds import sample_feeds
from difforge.profile.attention import profile_attention
from difforge.profile.machine import INTERESTING_FLAGS, describe_machine
from difforge.profile.stats import growth_exponent, summarize

THREADS = 2
SIZES_FULL, SIZES_QUICK = (32, 64, 96, 128), (32, 64)
CONV_LATENT = 64
VAE_FACTOR = 8  # pixels per latent of the tiny presets' VAE
TARGET_EXPONENT, TARGET_SPEEDUP = 1.15, 3.0  # issue 4's targets
SPEEDUP_OVER = {"sd-full": "difforge's full-attention artifact", "eager": "PyTorch eager"}
MAX_CALL_S = 60.0  # a (variant, size) predicted to take longer per call is skipped


@dataclass(frozen=True)
class Variant:
    """One graph to time: the artifact it comes from and its runner's key."""

    key: str
    title: str
    preset: str
    patches: tuple[str, ...] = ()
    role: str = "denoiser"
    per_token: int = 1  # latent side per token side (DiT, patch 2: 2)
    fixed: bool = False  # one artifact per size, else one over the run's sizes


SD = [
    Variant("sd-full", "full attention (difforge artifact)", "tiny-sd"),
    Variant("sd-linfusion", "LinFusion", "tiny-sd", ("linfusion",)),
]
#: the baseline: PyTorch eager on what the full-attention artifact is fed
EAGER = Variant("eager", "PyTorch eager, full attention", "tiny-sd")
_dit = partial(Variant, preset="tiny-dit", per_token=2, fixed=True)
DIT = [
    _dit("dit-full", "full attention"),
    _dit("dit-clear8", "CLEAR r=8", patches=("clear:radius=8",)),
    _dit("dit-clear16", "CLEAR r=16", patches=("clear:radius=16",)),
]
_LK = partial(Variant, title="", preset="tiny-lk-unet", fixed=True)
_RD = partial(Variant, title="", preset="tiny-sd", patches=("redilate:scale=2",), fixed=True)
CONV = [  # issue 5: (before, after)
    (_LK("lk-plain"), _LK("lk-reparam", patches=("reparam",))),
    (_RD("sd-plain64"), _RD("sd-redilated64", role="denoiser@redilated")),
]


@dataclass
class Cell:
    """Samples of one (variant, size) in ms."""

    latency: list[float] = field(default_factory=list)
    core: list[float] = field(default_factory=list)
    proj: list[float] = field(default_factory=list)
    skipped: str | None = None

    def med(self, what: str) -> float | None:
        values: list[float] = getattr(self, what)
        return summarize(values)["p50"] if values else None


Caller = Callable[[int], Callable[[], Any]]  # tokens per side -> one zero-argument call


@dataclass
class Bench:
    """One run: where its artifacts live, what it measured, and the log."""

    work: Path
    sizes: tuple[int, ...] = SIZES_QUICK
    runs: int = 5
    profile_runs: int = 2
    cells: dict[tuple[str, int], Cell] = field(default_factory=dict)
    builds: dict[str, float | None] = field(default_factory=dict)
    unmapped_ops: Counter[str] = field(default_factory=Counter)  # ms by op type
    max_unmapped: float = 0.0  # the largest share of a run's kernel time left unplaced
    started: float = field(default_factory=time.perf_counter)

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.started:6.1f}s] {msg}", flush=True)

    def med(self, key: str, tokens: int, what: str) -> float | None:
        return self.cells.get((key, tokens), Cell()).med(what)

    def artifact(self, v: Variant, tokens: int) -> Path:
        """Compile (or reuse, from an earlier ``--work``) the artifact running ``v`` at ``tokens``:
        built for that size alone if ``v.fixed``, else for latent sides over the run's sizes."""
        s = self.sizes
        latents = (tokens * v.per_token,) * 3 if v.fixed else (s[0], s[len(s) // 2], s[-1])
        name = "-".join([v.preset, *v.patches, *map(str, latents)]).replace(":", "_")
        if (self.work / name / "manifest.json").is_file():
            self.builds.setdefault(name, None)
            return self.work / name
        export: dict[str, Any] = {"preset": v.preset}
        export["resolution"] = difforge.ResolutionRange(*(x * VAE_FACTOR for x in latents))
        if v.preset == "tiny-dit":  # its size is fixed: a model folder per size
            export = {"model": dit_folder(latents[0], self.work / f"tiny-dit-{latents[0]}")}
        start = time.perf_counter()
        config = difforge.ExportConfig(
            self.work / name, patches=list(v.patches), max_batch=1, verify=False, **export
        )
        out = difforge.compile(difforge.CompileConfig(config, threads=THREADS))
        self.builds[name] = time.perf_counter() - start
        self.log(f"  {name}: compiled in {self.builds[name]:.1f} s")
        return out

    def feeds(self, v: Variant, tokens: int) -> tuple[Path, dict[str, Any]]:
        """``v``'s artifact and batch-1 inputs for its runner at ``tokens`` per side."""
        path, side = self.artifact(v, tokens), tokens * v.per_token
        entry = difforge.info(path, verify=False).components[v.role]
        return path, sample_feeds(entry, sizes={"batch": 1, "height": side, "width": side})


def dit_folder(latent: int, dst: Path) -> Path:
    """tiny-dit's weights as a diffusers ``DiTPipeline`` folder for latent side ``latent``."""
    if not (dst / "model_index.json").is_file():
        from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

        from difforge.sources.presets import load_preset

        source = load_preset("tiny-dit")
        base: Any = source.denoiser
        dit = DiTTransformer2DModel.from_config({**base.config, "sample_size": latent})
        dit.load_state_dict(base.state_dict())
        scheduler = DDIMScheduler.from_config(source.scheduler_config)
        pipeline = DiTPipeline(transformer=dit.eval(), vae=source.vae, scheduler=scheduler)
        pipeline.save_pretrained(dst)
    return dst


def caller(bench: Bench, v: Variant) -> Caller:
    """Calls of ``v`` at a token size: its runner (the runtime's ONNX Runtime session), or for
    :data:`EAGER` the PyTorch eager tiny-sd U-Net (through the bench's baseline row)."""
    loaded: dict[Path, difforge.Pipeline] = {}
    if v == EAGER:
        from difforge.exporter.wrappers import UNetDenoiser
        from difforge.profile.bench.baselines import torch_eager
        from difforge.sources.presets import load_preset

        eager = torch_eager(UNetDenoiser(load_preset("tiny-sd").denoiser).eval(), THREADS).infer

    def at(tokens: int) -> Callable[[], Any]:
        path, feeds = bench.feeds(v, tokens)
        if v == EAGER:
            return lambda: eager(feeds)  # type: ignore[misc]  # torch_eager sets infer
        if path not in loaded:
            loaded[path] = difforge.load(path, threads=THREADS, lazy=True)
        runner = loaded[path].runners[v.role]
        return lambda: runner.infer(feeds)

    return at


def timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1e3


def measure(bench: Bench, callers: dict[str, Caller], sizes: Sequence[int], runs: int) -> None:
    """Per size: one warm-up call each, then ``runs`` rounds alternating the variants."""
    last: dict[str, tuple[int, float]] = {}
    for tokens in sizes:
        calls: dict[str, Callable[[], Any]] = {}
        for name, at in callers.items():
            cell = bench.cells.setdefault((name, tokens), Cell())
            previous = last.get(name, (tokens, 0.0))  # predict a quadratic worst case first
            if previous[1] * (tokens / previous[0]) ** 4 > MAX_CALL_S * 1e3:
                cell.skipped = f"skipped: predicted over {MAX_CALL_S:.0f} s per call"
                continue
            try:
                calls[name] = at(tokens)
                last[name] = (tokens, timed(calls[name]))
            except Exception as exc:  # out of memory etc.: record it, keep going
                calls.pop(name, None)
                cell.skipped = f"failed: {type(exc).__name__}: {str(exc)[:120]}"
                bench.log(f"    {name} @ {tokens}²: {cell.skipped}")
        for _ in range(runs):
            for name, call in calls.items():
                bench.cells[(name, tokens)].latency.append(timed(call))
        done = ", ".join(f"{n} {_ms(bench.med(n, tokens, 'latency'))} ms" for n in calls)
        bench.log(f"    {tokens}² tokens: {done}")


def profile(bench: Bench, v: Variant) -> None:
    """Attention time per size from ONNX Runtime's profiler, in a session of its own."""
    for tokens in bench.sizes:
        cell = bench.cells.setdefault((v.key, tokens), Cell())
        if not cell.skipped:
            path, feeds = bench.feeds(v, tokens)
            (found,) = profile_attention(
                path, [feeds], component=v.role, runs=bench.profile_runs, threads=THREADS
            )
            for r in found:
                cell.core.append(r.core * 1e3)
                cell.proj.append(r.proj * 1e3)
                bench.max_unmapped = max(bench.max_unmapped, r.unmapped)
                bench.unmapped_ops.update({op: s * 1e3 for op, s in r.unmapped_ops.items()})


def exponent(bench: Bench, key: str, what: str, sizes: Sequence[int] = ()) -> float | None:
    """The growth exponent of ``key``'s medians of ``what`` against N = tokens."""
    pts = [(s * s, m) for s in sizes or bench.sizes if (m := bench.med(key, s, what))]
    return growth_exponent([n for n, _ in pts], [m for _, m in pts])


def _ms(value: float | None) -> str:
    return "—" if value is None else (f"{value:.1f}" if value >= 10 else f"{value:.2f}")


def _e(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def attention_table(bench: Bench, variants: Sequence[Variant]) -> str:
    sizes = bench.sizes
    lines = [
        "| variant | measure | " + " | ".join(f"{s}² ({s * s})" for s in sizes) + " | e |",
        "|---|---|" + "---:|" * (len(sizes) + 1),
    ]
    for v in variants:
        for label, what in (("denoiser", "latency"), ("attn core", "core"), ("attn proj", "proj")):
            if v == EAGER and what != "latency":
                continue
            row = [bench.cells.get((v.key, s), Cell()) for s in sizes]
            values = [c.skipped.split(":")[0] if c.skipped else _ms(c.med(what)) for c in row]
            e = _e(exponent(bench, v.key, what))
            lines.append(f"| {v.title} | {label} ms | " + " | ".join(values) + f" | {e} |")
    return "\n".join(lines)


def verdicts(bench: Bench) -> list[str]:
    sizes, out, met = bench.sizes, [], {True: "**met**", False: "**not met**"}
    for v in (SD[1], *DIT[1:]):
        e, target = exponent(bench, v.key, "core"), f"{v.title} attention e ≤ {TARGET_EXPONENT}"
        if e is None:
            out.append(f"{target}: not measured")
            continue
        tail = f"whole denoiser e = {_e(exponent(bench, v.key, 'latency'))}"
        if e > TARGET_EXPONENT and len(sizes) > 2:  # the smallest size is a few ms: noisy
            tail += f"; without {sizes[0]}², e = {_e(exponent(bench, v.key, 'core', sizes[1:]))}"
        over = f"{sizes[0]}²–{sizes[-1]}²"
        out.append(f"{target}: {met[e <= TARGET_EXPONENT]} (e = {e:.2f} over {over}; {tail})")
    top, fast = sizes[-1], bench.med("sd-linfusion", sizes[-1], "latency")
    for key, title in SPEEDUP_OVER.items():
        ref = bench.med(key, top, "latency")
        target = f"LinFusion denoiser ≥ {TARGET_SPEEDUP:g}× faster than {title} at {top}²"
        if fast is None or ref is None:
            out.append(f"{target}: not measured")
            continue
        note = "" if top == 128 else f" (only up to {top}² in this run; the target is at 128²)"
        result = f"({ref / fast:.2f}×: {ref:.0f} ms vs {fast:.0f} ms)"
        out.append(f"{target}: {met[ref / fast >= TARGET_SPEEDUP]} {result}{note}")
    return out


def render(bench: Bench, machine: dict[str, Any], loads: list[Any], quick: bool) -> str:
    """The report, in docs/perf-patches.md's layout."""
    load = "start {}, end {}".format(*("/".join(f"{x:.2f}" for x in lo) for lo in loads))
    if max(lo[0] for lo in loads) > 1.5:
        load += " — **taken under load** (shared machine: absolute times inflated, ratios less so)"
    absent = " ".join(f for f in INTERESTING_FLAGS if f not in machine["cpu_flags"])
    libs = {"difforge": difforge.__version__, "python": machine["python"], **machine["libraries"]}
    conv = []
    for before, after in CONV:
        a, b = (bench.med(v.key, CONV_LATENT, "latency") for v in (before, after))
        graph = f" ({after.role.split('@')[1]})" if "@" in after.role else ""
        title = f"{after.preset}: plain → `{after.patches[-1]}`{graph}"
        ratio = "—" if a is None or b is None else f"{b / a:.2f}"
        conv.append(f"| {title} | {_ms(a)} | {_ms(b)} | {ratio} |")
    by_op = ", ".join(f"{k} {v:.0f}" for k, v in bench.unmapped_ops.most_common(6)) or "none"
    builds = (
        f"| {k} | {f'{v:.1f}' if v else 'reused (--work)'} |" for k, v in bench.builds.items()
    )
    nl = "\n"
    return f"""\
# Patch benchmarks (issues 4 and 5)

Generated by `scripts/bench_patches.py{" --quick" if quick else ""}`; do not edit by hand.

## Machine

- date: {time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())} (run took \
{(time.perf_counter() - bench.started) / 60:.1f} min)
- CPU: {machine["cpu_model"]}, {machine["logical_cpus"]} logical cores; flags: \
{" ".join(machine["cpu_flags"])}{f"; absent: {absent}" if absent else ""}
- ONNX Runtime CPU through difforge's runtime, intra_op_num_threads={THREADS}, inter_op=1,
  graph optimisation level all; PyTorch eager with torch.set_num_threads({THREADS})
- {", ".join(f"{k} {v}" for k, v in libs.items())}
- load average (1/5/15 min): {load}
- latency: batch 1, median of {bench.runs} runs after one warm-up, variants alternating per
  round; attention: median over {bench.profile_runs} profiled runs after one warm-up

## Issue 4: attention scaling

N = latent tokens (tiny-sd: latent side = token side; tiny-dit: patch 2, latent side = 2 ×
token side, one artifact per size). Times in ms. *attn core* / *attn proj*: ONNX Runtime's
kernel time of the nodes the exporter's metadata places in a self-attention (`attn1`) module,
outside / inside its q/k/v/out projections (`difforge.profile.attention`; tiny-dit's fused
`Attention` op holds its q/k/v projection). e: least-squares slope of log time on log N.

### tiny-sd U-Net

{attention_table(bench, [*SD, EAGER])}

### tiny-dit

{attention_table(bench, DIT)}

Kernels the exporter's metadata cannot place (ONNX Runtime's layout conversions and fusions),
in neither column: at most {bench.max_unmapped:.1%} of a run's kernel time; ms by op: {by_op}.

### Targets

{nl.join(f"- {line}" for line in verdicts(bench))}

PyTorch eager runs diffusers' `AttnProcessor2_0` (`scaled_dot_product_attention`).

## Issue 5: convolution patches ({CONV_LATENT}² latents, ONNX Runtime CPU)

| comparison | before ms | after ms | after / before |
|---|---:|---:|---:|
{nl.join(conv)}

- reparam merges each dilated reparam block into one depthwise conv (InceptionNeXt: split).
- redilate's `redilated` graph (steps i < τ) has the same FLOPs, on dilation-2 convs.

## Builds

| artifact | difforge.compile s |
|---|---:|
{nl.join(builds)}
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two sizes (32², 64²)")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parents[1] / "docs/perf-patches.md"
    )
    parser.add_argument("--work", type=Path, default=None, help="keep (and reuse) artifacts here")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per cell (≥ 5)")
    args = parser.parse_args(argv)
    load_start, sizes = os.getloadavg(), SIZES_QUICK if args.quick else SIZES_FULL
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-patches-"))
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(work, sizes, max(args.runs, 5), 2 if args.quick else 3)
    bench.log(f"load average {load_start}; artifacts in {work}; compiling (difforge.compile)")
    conv = [v for pair in CONV for v in pair]
    for v, t in [(v, t) for v in [*SD, *DIT] for t in sizes] + [(v, CONV_LATENT) for v in conv]:
        bench.artifact(v, t)
    for group in ([*SD, EAGER], DIT):
        bench.log(f"latency ({', '.join(v.key for v in group)}), alternating")
        measure(bench, {v.key: caller(bench, v) for v in group}, sizes, bench.runs)
    bench.log("attention time from ONNX Runtime's profiler")
    for v in [*SD, *DIT]:
        profile(bench, v)
    bench.log(f"issue 5: {CONV_LATENT}² latents, alternating")
    measure(bench, {v.key: caller(bench, v) for v in conv}, [CONV_LATENT], max(bench.runs, 7))
    text = render(bench, describe_machine(THREADS), [load_start, os.getloadavg()], args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    bench.log(f"wrote {args.out}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
