"""Train difforge's digits reference models from scratch, seeded (issue 6); `make reference`.

Stages (all by default, in this order; later ones load what earlier ones wrote):

    judge        CNN classifier that scores samples        -> models/judge
    unet         class-conditional U-Net teacher (flow)     -> models/digits-unet
    dit          class-conditional DiT teacher (flow)       -> models/digits-dit
    students     4-step (reflow) and 1-step students        -> models/digits-unet-{4,1}step
    linfusion    LinFusion attention distilled from unet    -> models/digits-unet-linfusion
    clear        CLEAR r=4 attention distilled from dit     -> models/digits-dit-clear

Each model folder gets card.json (data, training, seed, metrics) and README.md; the table of
all metrics goes to docs/quality.md.

    .venv/bin/python scripts/make_reference.py [--only unet,dit] [--out models] [--quick]

``--quick`` shrinks every stage (a smoke test of the script, minutes, not models to keep).
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from difforge.artifact.staging import staged_folder
from difforge.reference.cards import (
    CHECK_SAMPLES,
    CHECK_SEED,
    DATA,
    EVAL_SEED,
    JUDGE_ARCH,
    QUALITY_MODELS,
    judge_readme,
    make_card,
    quality_doc,
    quality_table,
    readme,
)
from difforge.reference.data import SPLIT_SEED, TEST_FRACTION, load_digits_split
from difforge.reference.judge import Judge, save_judge, train_judge
from difforge.reference.judge import TrainConfig as JudgeConfig
from difforge.reference.metrics import class_accuracy, frechet_distance, judge_features

STAGES = ("judge", "unet", "dit", "students", "linfusion", "clear")


@dataclass(frozen=True)
class Budget:
    """Optimiser steps per stage (the 30-minute budget on 2 cores is spent here)."""

    unet: int = 1200
    dit: int = 1200
    couplings: int = 1536
    coupling_steps: int = 16
    reflow: int = 500
    one_step: int = 300
    linfusion: int = 250
    clear: int = 250
    eval_samples: int = 1000


QUICK = Budget(
    unet=20,
    dit=20,
    couplings=64,
    coupling_steps=4,
    reflow=10,
    one_step=10,
    linfusion=10,
    clear=10,
    eval_samples=40,
)
TEACHER_STEPS = 50
TEACHER_GUIDANCE = 1.0
GUIDANCE_RANGE = (1.0, 2.0)
STUDENT_GUIDANCES = (1.5, 2.0)


class Reporter:
    def __init__(self, console: Console, judge_dir: Path) -> None:
        self.console = console
        self.judge_dir = judge_dir

    def bar(
        self, label: str, total: int, unit: str = "steps"
    ) -> tuple[Progress, Callable[..., None]]:
        progress = Progress(
            TextColumn(f"[bold]{label:<18}[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit + "{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )
        task = progress.add_task(label, total=total, info="")

        def update(done: int, loss: float | None = None) -> None:
            info = f" · loss {loss:.4f}" if loss is not None else ""
            progress.update(task, completed=done, info=info)

        return progress, update

    def train(
        self, label: str, total: int, fn: Callable[[Callable[[int, float], None]], Any]
    ) -> Any:
        progress, update = self.bar(label, total)
        with progress:
            return fn(update)


def _environment(seconds: float) -> dict[str, Any]:
    return {
        "seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def _measure(
    model: torch.nn.Module, steps: int, guidance: float, budget: Budget, rep: Reporter, label: str
) -> dict[str, Any]:
    """Card metrics: accuracy and FD from ``eval_samples``, plus the small check sample."""
    from difforge.reference.flow import sample
    from difforge.reference.quality import balanced_labels, score

    start = time.perf_counter()
    labels = balanced_labels(budget.eval_samples)
    images = sample(model, labels, steps, guidance, seed=EVAL_SEED)
    judge = str(rep.judge_dir)
    full = score(images, labels, judge)
    check_labels = balanced_labels(CHECK_SAMPLES)
    check = score(
        sample(model, check_labels, steps, guidance, seed=CHECK_SEED), check_labels, judge
    )
    rep.console.print(
        f"  {label}: accuracy {full.accuracy:.4f}, FD {full.fd:.2f} ({full.samples} samples, "
        f"{steps} steps, guidance {guidance}; {time.perf_counter() - start:.0f} s)"
    )
    return {
        "steps": steps,
        "guidance": guidance,
        "accuracy": round(full.accuracy, 4),
        "fd": round(full.fd, 3),
        "samples": full.samples,
        "seed": EVAL_SEED,
        "check": {
            "samples": CHECK_SAMPLES,
            "seed": CHECK_SEED,
            "accuracy": round(check.accuracy, 4),
            "fd": round(check.fd, 3),
        },
    }


def _by_guidance(
    model: torch.nn.Module, steps: int, budget: Budget, rep: Reporter
) -> dict[str, dict[str, float]]:
    """A student's quality at other embedded guidance scales (cheap: no CFG passes)."""
    from difforge.reference.flow import sample
    from difforge.reference.quality import balanced_labels, score

    out = {}
    labels = balanced_labels(budget.eval_samples)
    for w in STUDENT_GUIDANCES:
        q = score(sample(model, labels, steps, w, seed=EVAL_SEED), labels, str(rep.judge_dir))
        rep.console.print(f"    guidance {w}: accuracy {q.accuracy:.4f}, FD {q.fd:.2f}")
        out[str(w)] = {"accuracy": round(q.accuracy, 4), "fd": round(q.fd, 3)}
    return out


def stage_judge(out: Path, rep: Reporter, quick: bool) -> None:
    split = load_digits_split()
    cfg = JudgeConfig(steps=50 if quick else JudgeConfig.steps)
    start = time.perf_counter()
    model = rep.train(
        "judge",
        cfg.steps,
        lambda up: train_judge(split.train_images, split.train_labels, cfg, on_step=up),
    )
    seconds = time.perf_counter() - start
    test_acc = class_accuracy(model, split.test_images, split.test_labels)
    train_acc = class_accuracy(model, split.train_images, split.train_labels)
    fd = frechet_distance(
        judge_features(model, split.test_images), judge_features(model, split.train_images)
    )
    rep.console.print(f"  judge: test accuracy {test_acc:.4f}, FD(test, train) {fd:.2f}")
    if test_acc < 0.97 and not quick:
        raise SystemExit("judge test accuracy below 0.97; weights not written")
    folder = out / "judge"
    save_judge(model, folder)
    card = {
        "name": "difforge-digits-judge",
        "data": DATA,
        "split": f"stratified {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%} per class "
        f"(numpy default_rng seed {SPLIT_SEED}), {len(split.train_labels)} train / "
        f"{len(split.test_labels)} test",
        "architecture": JUDGE_ARCH,
        "parameters": sum(p.numel() for p in Judge().parameters()),
        "training": {
            "steps": cfg.steps,
            "batch_size": cfg.batch_size,
            "optimizer": "AdamW",
            "lr": cfg.lr,
            "schedule": "cosine",
            "weight_decay": cfg.weight_decay,
            "max_shift": cfg.max_shift,
            "seed": cfg.seed,
            **_environment(seconds),
        },
        "metrics": {
            "test_accuracy": round(test_acc, 6),
            "train_accuracy": round(train_acc, 6),
            "test_size": len(split.test_labels),
            "fd_test_vs_train": round(fd, 6),
        },
        "date": datetime.date.today().isoformat(),
    }
    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (folder / "README.md").write_text(judge_readme(card))


def _train_cfg(steps: int, **kw: Any) -> Any:
    from difforge.reference.flow import TrainConfig

    return TrainConfig(steps=steps, **kw)


def _save_model(
    out: Path, name: str, model: torch.nn.Module, card: dict[str, Any], steps: int, guidance: float
) -> None:
    from difforge.reference.folders import folder_bytes, save_pipeline, write_card

    with staged_folder(out / name, force=True) as tmp:
        save_pipeline(tmp, model, default_steps=steps, default_guidance=guidance)
        card["weights_bytes"] = folder_bytes(tmp)
        write_card(tmp, card, readme(card))


def stage_teacher(out: Path, rep: Reporter, budget: Budget, which: str) -> None:
    from difforge.reference.architectures import (
        build_digits_dit,
        build_digits_unet,
        digits_dit_config,
        digits_unet_config,
    )
    from difforge.reference.flow import train_flow

    split = load_digits_split()
    is_unet = which == "unet"
    model = build_digits_unet(0) if is_unet else build_digits_dit(0)
    # DiT's own LabelEmbedding drops 10% of labels in training; the U-Net's are dropped here.
    cfg = _train_cfg(budget.unet if is_unet else budget.dit, p_uncond=0.1 if is_unet else 0.0)
    start = time.perf_counter()
    ema = rep.train(
        f"digits-{which}",
        cfg.steps,
        lambda up: train_flow(model, split.train_images, split.train_labels, cfg, up),
    )
    seconds = time.perf_counter() - start
    metrics = _measure(ema, TEACHER_STEPS, TEACHER_GUIDANCE, budget, rep, f"digits-{which}")
    config = digits_unet_config() if is_unet else digits_dit_config()
    arch = (
        "diffusers UNet2DConditionModel, pixel space 32x32x1; "
        if is_unet
        else "diffusers DiTTransformer2DModel, pixel space 32x32x1; "
    ) + json.dumps({k: v for k, v in config.items() if v is not None})
    card = make_card(
        f"digits-{which}",
        f"Class-conditional rectified-flow {'U-Net' if is_unet else 'DiT'} teacher for the "
        "digits, self-attention over 16x16 = 256 tokens; classifier-free guidance (null "
        "class 10).",
        "rectified flow (flow matching): x_s = (1-s)x0 + s*eps, target eps - x0, s ~ U(0,1), "
        "timestep s*1000; 10% null labels; EMA 0.999; bf16 autocast",
        arch,
        ema,
        0,
        {**asdict(cfg), **_environment(seconds)},
        metrics,
        usage="Load: `difforge.reference.folders.load_denoiser(folder)` or diffusers "
        f"`{'UNet2DConditionModel' if is_unet else 'DiTTransformer2DModel'}.from_pretrained("
        f"folder, subfolder='{'unet' if is_unet else 'transformer'}')`. Compile: "
        f"`difforge compile --model models/digits-{which} -o artifact`.",
    )
    _save_model(out, f"digits-{which}", ema, card, TEACHER_STEPS, TEACHER_GUIDANCE)


def stage_students(out: Path, rep: Reporter, budget: Budget) -> None:
    from difforge.reference.distill import make_couplings, train_one_step, train_reflow
    from difforge.reference.folders import load_denoiser

    teacher = load_denoiser(out / "digits-unet")
    start = time.perf_counter()
    progress, update = rep.bar("couplings", budget.couplings, "images")
    with progress:
        pairs = make_couplings(
            teacher,
            budget.couplings,
            budget.coupling_steps,
            GUIDANCE_RANGE,
            seed=7,
            on_batch=update,
        )
    pair_seconds = time.perf_counter() - start
    common = {
        "couplings": budget.couplings,
        "coupling_teacher_steps": budget.coupling_steps,
        "coupling_guidance": list(GUIDANCE_RANGE),
        "coupling_seconds": round(pair_seconds, 1),
    }
    arch = "digits-unet + guidance-scale embedding (time_cond_proj_dim=32, LCM's sinusoid)"
    cfg4 = _train_cfg(budget.reflow, lr=5e-4, warmup=20, ema=0.995)
    start = time.perf_counter()
    four = rep.train(
        "digits-unet-4step", cfg4.steps, lambda up: train_reflow(teacher, pairs, cfg4, up)
    )
    seconds = time.perf_counter() - start
    metrics = _measure(four, 4, TEACHER_GUIDANCE, budget, rep, "digits-unet-4step")
    metrics["by_guidance"] = _by_guidance(four, 4, budget, rep)
    card = make_card(
        "digits-unet-4step",
        "4-step student of digits-unet (2-rectified flow), guidance scale as an input.",
        f"InstaFlow-style reflow: teacher ODE couplings (noise z -> image x, "
        f"{budget.coupling_steps} Euler steps, "
        "CFG w ~ U[1,2]), student trained on the straight path x_s = (1-s)x + s z with "
        "target z - x and w as an embedding (no CFG at inference); initialised from the teacher",
        arch,
        four,
        0,
        {**asdict(cfg4), **_environment(seconds), **common},
        metrics,
        usage="Run with 4 flow-Euler steps; `--guidance` sets the embedded scale (trained 1-2).",
    )
    _save_model(out, "digits-unet-4step", four, card, 4, TEACHER_GUIDANCE)

    cfg1 = _train_cfg(budget.one_step, lr=3e-4, warmup=20, ema=0.995)
    start = time.perf_counter()
    one = rep.train(
        "digits-unet-1step", cfg1.steps, lambda up: train_one_step(four, pairs, cfg1, up)
    )
    seconds = time.perf_counter() - start
    metrics = _measure(one, 1, TEACHER_GUIDANCE, budget, rep, "digits-unet-1step")
    metrics["by_guidance"] = _by_guidance(one, 1, budget, rep)
    card = make_card(
        "digits-unet-1step",
        "1-step student of digits-unet: the 4-step student distilled to one Euler step.",
        "InstaFlow-style one-step distillation from the reflowed student: minimise "
        "||(z - v(z, s=1, c, w)) - x||^2 over the teacher's couplings (L2, not LPIPS)",
        arch,
        one,
        0,
        {**asdict(cfg1), **_environment(seconds), **common},
        metrics,
        usage="Run with `--steps 1`.",
    )
    _save_model(out, "digits-unet-1step", one, card, 1, TEACHER_GUIDANCE)


@dataclass
class Distilled:
    """A patched copy of a teacher after attention distillation."""

    student: torch.nn.Module
    layers: list[str]
    training: dict[str, Any]


def _distill(
    out: Path,
    rep: Reporter,
    base: str,
    patch: str,
    options: dict[str, Any],
    trainable: Callable[[torch.nn.Module], list[torch.nn.Parameter]],
    cfg: Any,
) -> Distilled:
    """Patch a copy of ``base`` and train the parameters ``trainable`` picks on it."""
    import copy

    from difforge.patches import get_patch_class
    from difforge.reference.distill import distill_attention
    from difforge.reference.folders import load_denoiser

    split = load_digits_split()
    teacher = load_denoiser(out / base)
    student = copy.deepcopy(teacher)
    layers = list(get_patch_class(patch)(**options).apply(student).replaced)
    params = trainable(student)
    start = time.perf_counter()
    rep.train(
        patch,
        cfg.steps,
        lambda up: distill_attention(
            teacher, student, layers, params, split.train_images, split.train_labels, cfg, up
        ),
    )
    training = {**asdict(cfg), **_environment(time.perf_counter() - start)}
    return Distilled(student, layers, training)


def _patched_base(out: Path, base: str, patch: str, options: dict[str, Any]) -> torch.nn.Module:
    """The base model with the shipped patch weights: measured the way a user runs it."""
    from difforge.patches import get_patch_class
    from difforge.reference.folders import load_denoiser

    model = load_denoiser(out / base)
    get_patch_class(patch)(**options).apply(model)
    return model


def stage_linfusion(out: Path, rep: Reporter, budget: Budget) -> None:
    from difforge.reference.folders import (
        folder_bytes,
        save_linfusion_checkpoint,
        write_card,
    )

    def trainable(student: torch.nn.Module) -> list[torch.nn.Parameter]:
        # Every parameter of the replaced modules, as the authors' distill.py trains.
        from difforge.patches.linfusion import GeneralizedLinearAttention

        return [
            p
            for m in student.modules()
            if isinstance(m, GeneralizedLinearAttention)
            for p in m.parameters()
        ]

    cfg = _train_cfg(budget.linfusion, lr=1e-3, warmup=20, ema=0.0)
    done = _distill(out, rep, "digits-unet", "linfusion", {}, trainable, cfg)
    with staged_folder(out / "digits-unet-linfusion", force=True) as tmp:
        save_linfusion_checkpoint(tmp, done.student)
        patched = _patched_base(out, "digits-unet", "linfusion", {"checkpoint": tmp})
        metrics = _measure(patched, TEACHER_STEPS, TEACHER_GUIDANCE, budget, rep, "linfusion")
        card = make_card(
            "digits-unet-linfusion",
            "LinFusion generalized linear attention for every self-attention (attn1) of "
            "digits-unet, distilled from it. A LinFusion checkpoint (the authors' release "
            "layout) for the base model ../digits-unet.",
            "LinFusion distill.py at small scale: only the linear-attention modules train "
            "(initialised from the original to_q/k/v/out, projection MLPs from zero); loss "
            "MSE(v, target) + 0.5 MSE(v, v_teacher) + 0.5 sum_layers MSE(attn, attn_teacher)",
            f"digits-unet with {len(done.layers)} GeneralizedLinearAttention layers",
            patched,
            folder_bytes(tmp),
            done.training,
            metrics,
            base="digits-unet",
            patch="linfusion:checkpoint=models/digits-unet-linfusion",
            usage="Compile: `difforge compile --model models/digits-unet --patch "
            "linfusion:checkpoint=models/digits-unet-linfusion -o artifact`.",
        )
        write_card(tmp, card, readme(card))


def stage_clear(out: Path, rep: Reporter, budget: Budget) -> None:
    from difforge.reference.folders import (
        CLEAR_WEIGHTS,
        folder_bytes,
        save_clear_weights,
        write_card,
    )

    def trainable(student: torch.nn.Module) -> list[torch.nn.Parameter]:
        # CLEAR fine-tunes the attention projections it swaps in (.attn.to_q/k/v/out).
        from difforge.patches.clear import ClearAttnProcessor

        return [
            p
            for m in student.modules()
            if isinstance(getattr(m, "processor", None), ClearAttnProcessor)
            for sub in ("to_q", "to_k", "to_v", "to_out")
            for p in getattr(m, sub).parameters()
        ]

    cfg = _train_cfg(budget.clear, lr=5e-4, warmup=20, ema=0.0)
    done = _distill(out, rep, "digits-dit", "clear", {"radius": 4}, trainable, cfg)
    with staged_folder(out / "digits-dit-clear", force=True) as tmp:
        weights = save_clear_weights(tmp, done.student, done.layers)
        patched = _patched_base(out, "digits-dit", "clear", {"radius": 4, "weights": weights})
        metrics = _measure(patched, TEACHER_STEPS, TEACHER_GUIDANCE, budget, rep, "clear")
        card = make_card(
            "digits-dit-clear",
            "CLEAR circular local attention (radius 4 tokens on the 16x16 grid) for every "
            "self-attention of digits-dit, with to_q/to_k/to_v/to_out fine-tuned to match it. "
            f"Weights ({CLEAR_WEIGHTS}) for the base model ../digits-dit.",
            "attention distillation with only the patched attention projections trainable; "
            "loss MSE(v, target) + 0.5 MSE(v, v_teacher) + 0.5 sum_layers MSE(attn, "
            "attn_teacher)",
            f"digits-dit with {len(done.layers)} CLEAR attentions (r=4, strict disc)",
            patched,
            folder_bytes(tmp),
            done.training,
            metrics,
            base="digits-dit",
            patch=f"clear:radius=4,weights=models/digits-dit-clear/{CLEAR_WEIGHTS}",
            usage="Compile: `difforge compile --model models/digits-dit --patch "
            f"clear:radius=4,weights=models/digits-dit-clear/{CLEAR_WEIGHTS} -o artifact`.",
        )
        write_card(tmp, card, readme(card))


def update_readme_table(readme_path: Path, table: str) -> None:
    """Replace the table between README's quality-table markers, if it has them."""
    start, end = "<!-- quality-table: written by make reference -->\n", "\n<!-- /quality-table -->"
    text = readme_path.read_text(encoding="utf-8") if readme_path.is_file() else ""
    if start in text and end in text:
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
        readme_path.write_text(head + start + table + end + tail, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models"))
    parser.add_argument("--only", default=",".join(STAGES), help=f"comma list of {STAGES}")
    parser.add_argument("--quick", action="store_true", help="tiny budgets: a smoke test")
    parser.add_argument("--quality-doc", type=Path, default=Path("docs/quality.md"))
    args = parser.parse_args()
    stages = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}; known: {', '.join(STAGES)}")
    if args.quick and args.out.resolve() == (Path("models")).resolve():
        parser.error("--quick writes throwaway models: give it another --out")
    budget = QUICK if args.quick else Budget()
    rep = Reporter(Console(stderr=True), args.out / "judge")
    start = time.perf_counter()
    load_digits_split()
    for stage in STAGES:
        if stage not in stages:
            continue
        t0 = time.perf_counter()
        rep.console.rule(f"[bold]{stage}")
        if stage == "judge":
            stage_judge(args.out, rep, args.quick)
        elif stage in ("unet", "dit"):
            stage_teacher(args.out, rep, budget, stage)
        elif stage == "students":
            stage_students(args.out, rep, budget)
        elif stage == "linfusion":
            stage_linfusion(args.out, rep, budget)
        else:
            stage_clear(args.out, rep, budget)
        rep.console.print(f"  [green]✓[/green] {stage} in {time.perf_counter() - t0:.0f} s")
    if set(stages) == set(STAGES) and not args.quick:
        record = {
            "seconds": round(time.perf_counter() - start, 1),
            "date": datetime.date.today().isoformat(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        }
        (args.out / "reference-run.json").write_text(json.dumps(record, indent=2) + "\n")
    from difforge.reference.folders import read_card

    for name, _ in QUALITY_MODELS:  # README.md always follows card.json
        if (args.out / name / "card.json").is_file():
            card = read_card(args.out / name)
            (args.out / name / "README.md").write_text(readme(card), encoding="utf-8")
    table = quality_table(args.out)
    if not args.quick:
        args.quality_doc.write_text(quality_doc(args.out, table))
        update_readme_table(Path("README.md"), table)
    rep.console.print(table)
    rep.console.print(f"all stages: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
