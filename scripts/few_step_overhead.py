"""How much of a few-step generation is spent outside the model calls, by ``difforge profile``.

Usage: python scripts/few_step_overhead.py [--work DIR] [--out docs/perf.md] [--runs N]

Compiles an SD1.5-architecture folder under ``LCMScheduler`` (``real_size_folders.py
sd15-lcm``: seeded random weights, 512 px, batch 1, no guidance as LCM-LoRA runs) once into
``--work``, then profiles 1- and 4-step generations. The share reported is everything but the
text-encoder, denoiser and VAE-decoder calls (the sampler's arithmetic, request checks, noise,
image conversion) over the whole generation; the goal is under 2%. The table goes between
``<!-- few-step:begin -->`` and ``<!-- few-step:end -->`` of ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_size_folders import FOLDERS

from difforge.profile.bench.perfdoc import update_perf_doc
from difforge.profile.machine import describe_machine, flag_summary

GOAL = 0.02
MODEL_STAGES = ("conditioning", "denoiser", "vae_decoder")


def difforge(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "difforge", *args], capture_output=True, text=True, check=False
    )
    if done.returncode:
        sys.exit(f"difforge {args[0]} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def profile(artifact: Path, steps: int, runs: int, out: Path) -> dict[str, Any]:
    text = difforge(
        "profile", str(artifact), "--steps", str(steps), "--runs", str(runs), "--warmup", "1",
        "--out", str(out), "--json", "-q",
    )
    latency: dict[str, Any] = json.loads(text)["latency"]
    return latency


def row(steps: int, latency: dict[str, Any]) -> str:
    """Means, not medians: means add up, so what is outside the model calls is the total's
    mean less the model stages' means (medians of parts need not sum to the total's)."""
    total = latency["total"]["mean"]
    stages = {name: latency["stages"][name]["mean"] for name in latency["stages"]}
    outside = total - sum(stages[name] for name in MODEL_STAGES)
    share = outside / total
    cells = [
        str(steps),
        f"{total:.2f}",
        *(f"{stages[name]:.3f}" for name in MODEL_STAGES),
        f"{(stages['scheduler_and_host'] + latency['other']['mean']) * 1000:.2f}",
        f"{share:.3%}",
        "met" if share < GOAL else "missed",
    ]
    return "| " + " | ".join(cells) + " |"


def table(runs: int, rows: list[str]) -> str:
    machine = describe_machine(0)
    return "\n".join([
        f"Measured {dt.date.today().isoformat()} by `scripts/few_step_overhead.py` "
        f"(`difforge profile`, means of {runs} runs after one warm-up): "
        f"{machine['cpu_model']}, {machine['logical_cpus']} logical CPUs, flags "
        f"{flag_summary(machine)}; an SD1.5-architecture folder under LCMScheduler, 512 px, "
        "batch 1, guidance 1 (no CFG), fp32 on ONNX Runtime.",
        "",
        "| steps | generation (s) | text encoder (s) | denoiser (s) | VAE decoder (s) | "
        "sampler and host (ms) | outside the model calls | goal < 2% |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
        *rows,
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("real-size-work"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    folder = args.work / "sd15-lcm"
    if not (folder / "model_index.json").is_file():
        FOLDERS["sd15-lcm"](folder)
    artifact = args.work / "sd15-lcm.art"
    if not (artifact / "manifest.json").is_file():
        difforge("compile", "--model", str(folder), "-o", str(artifact), "--resolution", "512",
                 "--max-batch", "1", "--force", "-q")
    rows = []
    for steps in (1, 4):
        latency = profile(artifact, steps, args.runs, args.work / f"profile-{steps}")
        rows.append(row(steps, latency))
        print(rows[-1], flush=True)
    text = table(args.runs, rows)
    print(text)
    if args.out is not None:
        update_perf_doc(args.out, text, "few-step")


if __name__ == "__main__":
    main()
