"""Train difforge's reference models from scratch (issue 6); `make reference` runs this.

So far: the judge, a small CNN digit classifier, written to models/judge/ as model.safetensors
with card.json and README.md (data, split, architecture, steps, seed, accuracy, reference FD).

    .venv/bin/python scripts/make_reference.py [--out models/judge] [--steps N] [--seed S]
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from difforge.reference.data import RESOLUTION, SPLIT_SEED, TEST_FRACTION, load_digits_split
from difforge.reference.judge import FEATURE_DIM, Judge, TrainConfig, save_judge, train_judge
from difforge.reference.metrics import class_accuracy, frechet_distance, judge_features

ARCHITECTURE = (
    "conv3x3(1->16)+ReLU+maxpool2, conv3x3(16->32)+ReLU+maxpool2, conv3x3(32->64)+ReLU+maxpool2, "
    f"linear(1024->{FEATURE_DIM})+ReLU (penultimate features), linear({FEATURE_DIM}->10)"
)


def _readme(card: dict[str, object]) -> str:
    t = card["training"]
    m = card["metrics"]
    assert isinstance(t, dict) and isinstance(m, dict)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models/judge"))
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    args = parser.parse_args()
    console = Console(stderr=True)

    split = load_digits_split()
    console.print(
        f"digits: {len(split.train_labels)} train / {len(split.test_labels)} test, "
        f"{RESOLUTION}x{RESOLUTION}"
    )
    cfg = TrainConfig(steps=args.steps, seed=args.seed)
    start = time.perf_counter()
    with Progress(
        TextColumn("[bold]judge[/bold]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps · loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("judge", total=cfg.steps, loss=float("nan"))

        def on_step(step: int, loss: float) -> None:
            progress.update(task, completed=step, loss=loss)

        model = train_judge(split.train_images, split.train_labels, cfg, on_step=on_step)
    seconds = time.perf_counter() - start

    test_acc = class_accuracy(model, split.test_images, split.test_labels)
    train_acc = class_accuracy(model, split.train_images, split.train_labels)
    fd = frechet_distance(
        judge_features(model, split.test_images), judge_features(model, split.train_images)
    )
    console.print(
        f"[green]✓[/green] judge: test accuracy {test_acc:.4f}, train {train_acc:.4f}, "
        f"FD(test, train) {fd:.4f} ({seconds:.1f} s)"
    )
    if test_acc < 0.97:
        console.print("[red]✗ test accuracy below 0.97; weights not written[/red]")
        raise SystemExit(1)

    weights = save_judge(model, args.out)
    card: dict[str, object] = {
        "name": "difforge-digits-judge",
        "data": "scikit-learn load_digits (1,797 8x8 images, 10 classes), bilinear upscale to "
        f"{RESOLUTION}x{RESOLUTION}, 1 channel, values in [-1, 1]",
        "split": f"stratified {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%} per class "
        f"(numpy default_rng seed {SPLIT_SEED}), {len(split.train_labels)} train / "
        f"{len(split.test_labels)} test",
        "architecture": ARCHITECTURE,
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
            "seconds": round(seconds, 1),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "metrics": {
            "test_accuracy": round(test_acc, 6),
            "train_accuracy": round(train_acc, 6),
            "test_size": len(split.test_labels),
            "fd_test_vs_train": round(fd, 6),
        },
        "date": datetime.date.today().isoformat(),
    }
    (args.out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (args.out / "README.md").write_text(_readme(card))
    console.print(
        f"wrote {weights} ({weights.stat().st_size / 1024:.0f} KiB), card.json, README.md"
    )


if __name__ == "__main__":
    main()
