"""Compile real-size folders end to end and record, per stage: time, peak resident memory (the
whole process tree, sampled every 0.2 s) and, per component, the artifact's size and the fp32
weight bytes it was made from.

Usage: python scripts/real_size_compile.py sd15 [sdxl] [--work DIR] [--resolution R]
       [--max-batch N] [--out docs/perf.md]

Folders are written by ``scripts/real_size_folders.py`` (seeded random weights) into
``--work`` and kept there. Each compile is ``difforge compile`` in a child process, so one
that runs out of memory is reported with the stage it was in and the peak it reached, and the
next model still runs. The table goes between ``<!-- real-size:begin -->`` and
``<!-- real-size:end -->`` of ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_size_folders import FOLDERS

from difforge.profile.bench.perfdoc import update_perf_doc
from difforge.profile.machine import describe_machine, flag_summary

#: a finished task as the compile prints it: "✓ export denoiser (39.0 s)"
DONE = re.compile(r"^✓ (?P<task>.+) \((?P<seconds>[0-9.]+) s\)$")
GB = 1e9


@dataclass
class Stage:
    task: str
    seconds: float
    peak_bytes: int
    #: resident memory less file-backed pages (weights memory-mapped from safetensors, which
    #: the kernel may drop and read again): what the stage really allocated
    peak_anon: int = 0


@dataclass
class Run:
    model: str
    stages: list[Stage] = field(default_factory=list)
    peak_bytes: int = 0
    peak_anon: int = 0
    wall: float = 0.0
    returncode: int = 0
    last_line: str = ""
    #: the stage running when the compile ended without finishing
    unfinished_peak: int = 0


def _tree_rss(proc: psutil.Process) -> tuple[int, int]:
    """(resident, resident less file-backed) bytes of ``proc`` and its children."""
    try:
        infos = [p.memory_info() for p in [proc, *proc.children(recursive=True)]]
    except psutil.Error:
        return 0, 0
    return sum(m.rss for m in infos), sum(m.rss - m.shared for m in infos)


def compile_measured(model: str, folder: Path, out: Path, extra: list[str]) -> Run:
    """``difforge compile`` on ``folder`` with the peak memory of each printed stage."""
    cmd = [sys.executable, "-m", "difforge", "compile", "--model", str(folder), "-o", str(out),
           "--force", *extra]
    run = Run(model)
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc = psutil.Process(child.pid)
    stage_peak = [0, 0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss, anon = _tree_rss(proc)
            stage_peak[0] = max(stage_peak[0], rss)
            stage_peak[1] = max(stage_peak[1], anon)
            run.peak_bytes = max(run.peak_bytes, rss)
            run.peak_anon = max(run.peak_anon, anon)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert child.stdout is not None
    for line in child.stdout:
        line = line.rstrip()
        print(line, flush=True)
        if line.strip():  # no paths of this machine in the table
            run.last_line = line.strip().replace(str(folder.parent), "…")
        match = DONE.match(line.strip())
        if match:
            task = match["task"].replace(str(folder), f"the {model} folder")
            run.stages.append(Stage(task, float(match["seconds"]), *stage_peak))
            stage_peak[:] = [0, 0]
    run.returncode = child.wait()
    done.set()
    sampler.join()
    run.unfinished_peak = stage_peak[0]
    run.wall = time.perf_counter() - start
    return run


def weight_bytes(folder: Path) -> dict[str, int]:
    """fp32 weight bytes per folder part (the VAE's include its encoder)."""
    return {
        sub.name: sum(f.stat().st_size for f in sub.glob("*.safetensors"))
        for sub in sorted(folder.iterdir())
        if sub.is_dir() and any(sub.glob("*.safetensors"))
    }


def artifact_bytes(out: Path) -> dict[str, int]:
    if not out.is_dir():
        return {}
    return {
        sub.name: sum(f.stat().st_size for f in sub.rglob("*") if f.is_file())
        for sub in sorted(out.iterdir())
        if sub.is_dir()
    }


def _part(component: str, weights: dict[str, int]) -> str:
    """The folder part an artifact component was made from (the VAE's includes its encoder)."""
    if component == "denoiser":
        return "unet" if "unet" in weights else "transformer"
    return {"vae_decoder": "vae"}.get(component, component)


def render(runs: list[tuple[Run, dict[str, int], dict[str, int]]], extra: list[str]) -> str:
    machine = describe_machine(0)
    lines = [
        f"Measured {dt.date.today().isoformat()} by `scripts/real_size_compile.py "
        f"{' '.join(r.model for r, _, _ in runs)} {' '.join(extra)}`: {machine['cpu_model']}, "
        f"{machine['logical_cpus']} logical CPUs, flags {flag_summary(machine)}; "
        "seeded random weights in the published architectures. Peak: resident memory of the "
        "compile's process tree during the stage; anonymous: the same less file-backed pages "
        "(weights memory-mapped from the folder's safetensors, which the kernel can drop).",
        "",
    ]
    for run, weights, sizes in runs:
        unet = weights.get("unet", 0)
        status = (
            f"compiled in {run.wall / 60:.1f} min"
            if run.returncode == 0
            else f"**failed** (exit {run.returncode}) after {run.wall / 60:.1f} min, after the "
            f"last finished stage, at a peak of {run.unfinished_peak / GB:.1f} GB: "
            f"`{run.last_line[:160]}`"
        )
        lines += [
            f"**{run.model}** ({status}; whole-run peak {run.peak_bytes / GB:.1f} GB resident, "
            f"{run.peak_anon / GB:.1f} GB anonymous = {run.peak_bytes / max(unet, 1):.1f}x and "
            f"{run.peak_anon / max(unet, 1):.1f}x the U-Net's {unet / GB:.2f} GB of fp32 "
            "weights)",
            "",
            "| stage | seconds | peak GB | anonymous GB |",
            "|---|---:|---:|---:|",
            *(
                f"| {s.task} | {s.seconds:.1f} | {s.peak_bytes / GB:.1f} | "
                f"{s.peak_anon / GB:.1f} |"
                for s in run.stages
            ),
            "",
            "| component | fp32 weights in the folder (GB) | artifact (GB) |",
            "|---|---:|---:|",
            *(
                f"| {name} | {weights.get(_part(name, weights), 0) / GB:.2f} | {size / GB:.2f} |"
                for name, size in sizes.items()
                if not name.startswith("tokenizer")
            ),
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", choices=sorted(FOLDERS))
    parser.add_argument("--work", type=Path, default=Path("real-size-work"))
    parser.add_argument("--resolution", default=None)
    parser.add_argument("--max-batch", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    extra = ["--max-batch", str(args.max_batch)]
    if args.resolution:
        extra += ["--resolution", args.resolution]
    runs = []
    for model in args.models:
        folder = args.work / model
        if not (folder / "model_index.json").is_file():
            FOLDERS[model](folder)
        out = args.work / f"{model}.art"
        run = compile_measured(model, folder, out, extra)
        runs.append((run, weight_bytes(folder), artifact_bytes(out)))
    block = render(runs, extra)
    print(block)
    if args.out is not None:
        update_perf_doc(args.out, block, "real-size")


if __name__ == "__main__":
    main()
