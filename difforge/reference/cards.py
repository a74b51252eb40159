"""Model cards, their README.md, and docs/quality.md for the digits reference models.

Everything here renders what ``scripts/make_reference.py`` measured; nothing trains.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import torch

from difforge.reference.data import RESOLUTION, SPLIT_SEED, TEST_FRACTION
from difforge.reference.judge import FEATURE_DIM

EVAL_SEED = 1000  # the card's metrics: EVAL_SAMPLES samples from this seed
CHECK_SEED = 2000  # the card's "check": a small sample the tests regenerate
CHECK_SAMPLES = 100


JUDGE_ARCH = (
    "conv3x3(1->16)+ReLU+maxpool2, conv3x3(16->32)+ReLU+maxpool2, conv3x3(32->64)+ReLU+maxpool2, "
    f"linear(1024->{FEATURE_DIM})+ReLU (penultimate features), linear({FEATURE_DIM}->10)"
)

DATA = (
    "scikit-learn load_digits (1,797 8x8 images, 10 classes), bilinear upscale to "
    f"{RESOLUTION}x{RESOLUTION}, 1 channel, values in [-1, 1]"
)


def calling(card: dict[str, Any]) -> str:
    """How to call the denoiser by hand (what ``reference.architectures.Denoiser`` does)."""
    common = (
        "Rectified flow: x_s = (1 - s) x0 + s noise, timestep = s * 1000, output v = noise - x0; "
        "sample with `FlowMatchEulerDiscreteScheduler` (scheduler/) from s = 1 to 0."
    )
    if card["architecture"].startswith("diffusers DiTTransformer2DModel") or "dit" in card.get(
        "base", ""
    ):
        call = "`transformer(x, timestep=t, class_labels=labels).sample`; label 10 = no class."
    else:
        call = (
            "`unet(x, t, encoder_hidden_states=F.one_hot(labels, 11)[:, None].float(), "
            "class_labels=labels).sample`; label 10 = no class"
        )
        if "guidance-scale embedding" in card["architecture"]:
            call += (
                ", plus `timestep_cond=guidance_embedding(w, 32)` "
                "(`difforge.exporter.wrappers`, LCM's embedding of w - 1)"
            )
        call += "."
    return f"Calling it: {call} {common} `difforge.reference.architectures.Denoiser` wraps this."


def readme(card: dict[str, Any]) -> str:
    m = card["metrics"]
    t = card["training"]
    usage = card.get("usage", "")
    return f"""# {card["name"]}

{card["summary"]}

Written by `scripts/make_reference.py` (`make reference`); do not edit by hand.

- **Data**: {card["data"]}
- **Architecture**: {card["architecture"]} ({card["parameters"]:,} parameters, float32,
  {card["weights_bytes"] / 1e6:.2f} MB of weights)
- **Method**: {card["method"]}
- **Training**: {t["steps"]} steps, batch {t["batch_size"]}, AdamW lr {t["lr"]} (warm-up +
  cosine), seed {t["seed"]}, {t["seconds"]:.0f} s on CPU ({t["threads"]} threads),
  torch {t["torch"]}
- **Sampling**: flow-matching Euler, {m["steps"]} steps, guidance {m["guidance"]}
- **Quality** ({m["samples"]} samples, 100 per class, seed {m["seed"]}; judge `models/judge`):
  class accuracy **{m["accuracy"]:.4f}**, FD **{m["fd"]:.2f}** (test split vs train split: 10.93)
- **Date**: {card["date"]}

{usage}

{calling(card)}
"""


def make_card(
    name: str,
    summary: str,
    method: str,
    architecture: str,
    model: torch.nn.Module,
    weights_bytes: int,
    training: dict[str, Any],
    metrics: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "summary": summary,
        "data": DATA,
        "split": f"the judge's train split ({1 - TEST_FRACTION:.0%}, seed {SPLIT_SEED})",
        "architecture": architecture,
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_bytes": weights_bytes,
        "method": method,
        "training": training,
        "metrics": metrics,
        "date": datetime.date.today().isoformat(),
        **extra,
    }


def judge_readme(card: dict[str, Any]) -> str:
    t = card["training"]
    m = card["metrics"]
    return f"""# difforge digits judge

A small CNN classifier that scores generated digits for difforge's reference models: the
fraction of samples classified as their intended class, and a Fréchet distance (FD) between
its {FEATURE_DIM}-dim penultimate features of the samples and of the test split. FD values are
comparable only with other FDs from this judge. Written by `scripts/make_reference.py`
(`make reference`); do not edit by hand.

- **Data**: {card["data"]}
- **Split**: {card["split"]}
- **Architecture**: {card["architecture"]} ({card["parameters"]:,} parameters, float32)
- **Training**: {t["steps"]} steps, batch {t["batch_size"]}, AdamW lr {t["lr"]} (cosine),
  weight decay {t["weight_decay"]}, random shifts of ±{t["max_shift"]} px, seed {t["seed"]},
  {t["seconds"]:.0f} s on CPU ({t["threads"]} threads), torch {t["torch"]}
- **Test accuracy**: {m["test_accuracy"]:.4f} ({m["test_size"]} images);
  train accuracy {m["train_accuracy"]:.4f}
- **Reference FD** (test split against train split): {m["fd_test_vs_train"]:.4f}
- **Date**: {card["date"]}

Load with `difforge.reference.load_judge()`; metrics in `difforge.reference.metrics`.
"""


QUALITY_MODELS = (
    ("digits-unet", "U-Net teacher"),
    ("digits-unet-4step", "4-step student (reflow)"),
    ("digits-unet-1step", "1-step student (reflow + distillation)"),
    ("digits-unet-linfusion", "U-Net + LinFusion (distilled)"),
    ("digits-dit", "DiT teacher"),
    ("digits-dit-clear", "DiT + CLEAR r=4 (distilled)"),
)


def quality_table(out: Path) -> str:
    from difforge.reference.folders import read_card

    rows = [
        "| model | what | steps | guidance | class accuracy | FD | samples | train s | weights |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, what in QUALITY_MODELS:
        if not (out / name / "card.json").is_file():
            continue
        c = read_card(out / name)
        m, t = c["metrics"], c["training"]
        rows.append(
            f"| `{name}` | {what} | {m['steps']} | {m['guidance']} | {m['accuracy']:.3f} | "
            f"{m['fd']:.2f} | {m['samples']} | {t['seconds']:.0f} | "
            f"{c['weights_bytes'] / 1e6:.2f} MB |"
        )
    return "\n".join(rows)


def student_rows(out: Path) -> str:
    from difforge.reference.folders import read_card

    rows = ["| student | guidance | class accuracy | FD |", "|---|---:|---:|---:|"]
    for name in ("digits-unet-4step", "digits-unet-1step"):
        if not (out / name / "card.json").is_file():
            continue
        m = read_card(out / name)["metrics"]
        rows.append(f"| `{name}` | {m['guidance']} | {m['accuracy']:.3f} | {m['fd']:.2f} |")
        for w, q in m.get("by_guidance", {}).items():
            rows.append(f"| `{name}` | {w} | {q['accuracy']:.3f} | {q['fd']:.2f} |")
    return "\n".join(rows)


def quality_doc(out: Path, table: str) -> str:
    from difforge.reference.folders import read_card

    judge = read_card(out / "judge")
    run_file = out / "reference-run.json"
    run = json.loads(run_file.read_text()) if run_file.is_file() else {}
    total = (
        f"{run['seconds'] / 60:.0f} minutes ({run['date']}, {run['threads']} threads)"
        if run
        else "(not recorded)"
    )
    seconds = sum(
        read_card(out / name)["training"]["seconds"]
        for name, _ in QUALITY_MODELS
        if (out / name / "card.json").is_file()
    )
    return f"""<!-- written by scripts/make_reference.py (`make reference`); do not edit -->
# Reference-model quality

difforge's trained reference models, scored offline by the digits judge
(`models/judge`, {judge["metrics"]["test_accuracy"]:.2%} test accuracy). **Class accuracy**: the
fraction of samples the judge classifies as the class they were generated for. **FD**: the
Fréchet distance between the judge's 64-dim penultimate features of the samples and of the
359-image test split (FID's formula with the judge in place of Inception; lower is better,
comparable only with other FDs from this judge). The floor for a perfect generator is about
**{judge["metrics"]["fd_test_vs_train"]:.2f}**, the FD of the train split against the test
split. Every row: 1,000 samples (100 per class, seed {EVAL_SEED}), flow-matching Euler
sampling in PyTorch fp32.

{table}

"train s" is optimiser time on 2 CPU cores (AMD EPYC Zen 5, bf16 autocast), without the
evaluation (training alone: {seconds:.0f} s). The last full `make reference`, evaluation
included, took {total}.

## Guidance

Teachers run without classifier-free guidance (scale 1.0): on this data guidance raises class
accuracy but moves samples off the data distribution (a 600-step calibration U-Net, 200
samples: 94% accuracy and FD 25 without guidance, 99.5% and FD 152 at scale 2). The students
take the guidance scale as an input (LCM's embedding), trained on teacher couplings with w in
[1, 2]; their quality at other scales (the 4-step student has learnt to all but ignore it,
the 1-step student follows it, trading FD for accuracy as guidance does):

{student_rows(out)}

## Methods

- **Teachers** (`digits-unet`, `digits-dit`): class-conditional rectified flows in pixel space
  (x_s = (1-s)x0 + s*eps, target eps - x0), 10% null labels for classifier-free guidance, EMA
  weights. U-Net: diffusers `UNet2DConditionModel` (16/32/64 channels, one transformer block at
  16x16 with self-attention `attn1` and a cross-attention to a one-hot class token, class also
  added to the time embedding). DiT: diffusers `DiTTransformer2DModel` (2x2 patches, 256
  tokens, 4 blocks of width 64).
- **Students** (`digits-unet-4step`, `digits-unet-1step`): InstaFlow's recipe. Reflow
  (2-rectified flow) on teacher ODE couplings with the guidance scale folded in as an input,
  then one-step distillation of the reflowed student (L2 in place of InstaFlow's LPIPS).
- **LinFusion** (`digits-unet-linfusion`): every `attn1` replaced by generalized linear
  attention, only those modules trained, with LinFusion's distillation loss (noise MSE + 0.5
  teacher-output MSE + 0.5 per-layer attention-output MSE). Shipped as a LinFusion checkpoint
  for `digits-unet`.
- **CLEAR** (`digits-dit-clear`): every DiT self-attention restricted to a disc of radius 4
  tokens; its q/k/v/out projections fine-tuned with the same loss. Shipped as CLEAR's
  attention weights for `digits-dit`.

Reproduce: `make reference` (seeded; writes `models/`, this file, and each model's card). Two
runs on the same machine and thread count give bit-identical weights (checked with the
script's `--quick` budgets); other CPUs or thread counts may differ in the last bits, and so
in the metrics' last digits.

Lowered precisions (int8 on ONNX Runtime and OpenVINO, fp16, int8-weights) of these models,
each against its fp32 build with the same seeds: [quality-precision.md](quality-precision.md)
(`scripts/precision_quality.py`).
"""
