"""The judge: a small CNN digit classifier whose penultimate features feed the Fréchet distance."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from difforge.errors import DifforgeError
from difforge.reference.data import NUM_CLASSES

FEATURE_DIM = 64
# models/judge/ at the repository root (the package lives in difforge/reference/).
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "models" / "judge"


class Judge(nn.Module):
    """conv(1→16)·pool → conv(16→32)·pool → conv(32→64)·pool → fc(1024→64) → fc(64→10).

    Input: (N, 1, 32, 32) in [-1, 1]. ``features`` is the post-ReLU 64-dim penultimate layer.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, feature_dim: int = FEATURE_DIM) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 4 * 4, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)
        return F.relu(self.fc(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 500
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    max_shift: int = 2  # random translation (pixels at 32²) as augmentation
    seed: int = 0


def _shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ±max_shift pixels, padding with the background (-1)."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)[:, 0]
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, :]
    return padded[torch.arange(n)[:, None, None], rows, cols].unsqueeze(1)


def train_judge(
    images: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> Judge:
    """Train from scratch, seeded and deterministic on CPU (Adam, cosine LR, shift augmentation)."""
    cfg = config or TrainConfig()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return _train(images, labels, cfg, on_step)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def _train(
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    on_step: Callable[[int, float], None] | None,
) -> Judge:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = Judge()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps)
    n = images.shape[0]
    perm = torch.randperm(n, generator=gen)
    pos = 0
    model.train()
    for step in range(cfg.steps):
        if pos + cfg.batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos : pos + cfg.batch_size]
        pos += cfg.batch_size
        x = _shift(images[idx], cfg.max_shift, gen)
        loss = F.cross_entropy(model(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if on_step is not None:
            on_step(step + 1, loss.item())
    return model.eval()


@torch.no_grad()
def predict(model: Judge, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted class per image (N,) int64."""
    model.eval()
    return torch.cat(
        [model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)]
    )


def save_judge(model: Judge, directory: Path) -> Path:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.safetensors"
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt", "model": "difforge-digits-judge"})
    return path


def load_judge(directory: Path | str | None = None) -> Judge:
    """The shipped judge (``models/judge/`` by default), in eval mode."""
    from safetensors.torch import load_file

    path = Path(directory) if directory is not None else DEFAULT_DIR
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise DifforgeError(f"no judge weights at {weights}: run `make reference`")
    model = Judge()
    model.load_state_dict(load_file(str(weights)))
    return model.eval()


def load_card(directory: Path | str | None = None) -> dict[str, object]:
    path = (Path(directory) if directory is not None else DEFAULT_DIR) / "card.json"
    if not path.is_file():
        raise DifforgeError(f"no judge card at {path}: run `make reference`")
    card: dict[str, object] = json.loads(path.read_text())
    return card
