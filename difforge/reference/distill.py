"""Distillation of the digits teachers: few-step students and linearised/local attention.

Students follow InstaFlow's recipe (Liu et al. 2023) at small scale:

1. **Reflow** (2-rectified flow): the teacher's ODE, run with classifier-free guidance at a
   random scale w, couples each noise z with an image x; a student with a guidance-scale
   input learns the straight path between them (``x_σ = (1−σ)·x + σ·z``, target ``z − x``).
   Straight paths make few Euler steps accurate: this is the 4-step student.
2. **One-step distillation**: starting from the reflowed student, train only σ = 1 so that
   ``z − v(z)`` lands on the teacher's image x (L2; InstaFlow uses LPIPS): the 1-step student.

Attention distillation follows LinFusion's ``distill.py`` loss (also used here for CLEAR):
``MSE(v_s, target) + 0.5·MSE(v_s, v_teacher) + 0.5·Σ_layers MSE(attn_s, attn_teacher)``,
with only the replaced attention layers trainable.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from difforge.reference.architectures import NULL_CLASS, Denoiser, student_from_teacher
from difforge.reference.data import NUM_CLASSES
from difforge.reference.flow import StepHook, TrainConfig, batch_indices, optimise, sample


@dataclass(frozen=True)
class Couplings:
    """Noise → teacher image pairs, with the class and guidance scale that made them."""

    noise: torch.Tensor
    images: torch.Tensor
    labels: torch.Tensor
    guidance: torch.Tensor


def make_couplings(
    teacher: torch.nn.Module,
    count: int,
    steps: int,
    guidance_range: tuple[float, float],
    seed: int,
    on_batch: Callable[[int], None] | None = None,
    batch_size: int = 256,
) -> Couplings:
    """``count`` teacher ODE solutions (``steps`` Euler steps, CFG at a seeded random scale
    in ``guidance_range``), classes in turn: the student's training pairs."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((count, 1, 32, 32), generator=gen)
    labels = torch.arange(count) % NUM_CLASSES
    lo, hi = guidance_range
    guidance = lo + (hi - lo) * torch.rand(count, generator=gen)
    images = torch.empty_like(noise)
    for start in range(0, count, batch_size):
        sl = slice(start, start + batch_size)
        # One scale per image: sample() takes one scale, so run each distinct value group;
        # scales are quantised to 0.05 to batch them.
        w = (guidance[sl] * 20).round() / 20
        guidance[sl] = w
        for value in torch.unique(w):
            pick = (w == value).nonzero().flatten() + start
            images[pick] = sample(
                teacher, labels[pick], steps, float(value), seed=0, noise=noise[pick]
            )
        if on_batch is not None:
            on_batch(min(count, start + batch_size))
    return Couplings(noise, images, labels, guidance)


def train_reflow(
    teacher: torch.nn.Module,
    pairs: Couplings,
    cfg: TrainConfig,
    on_step: StepHook | None = None,
) -> torch.nn.Module:
    """The 4-step student: 2-rectified flow on the teacher's couplings."""
    student = student_from_teacher(teacher)
    f = Denoiser(student)

    def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        idx = batch_indices(len(pairs.labels), cfg.batch_size, gen)
        z, x = pairs.noise[idx], pairs.images[idx]
        sigma = torch.rand(len(idx), generator=gen)
        s = sigma[:, None, None, None]
        x_t = (1 - s) * x + s * z
        v = f(x_t, sigma * 1000, pairs.labels[idx], pairs.guidance[idx])
        return F.mse_loss(v.float(), z - x)

    return optimise(student, list(student.parameters()), loss_fn, cfg, on_step)


def train_one_step(
    reflowed: torch.nn.Module,
    pairs: Couplings,
    cfg: TrainConfig,
    on_step: StepHook | None = None,
) -> torch.nn.Module:
    """The 1-step student: the reflowed student tuned so that one Euler step is the image."""
    student = copy.deepcopy(reflowed).requires_grad_(True)
    f = Denoiser(student)

    def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        idx = batch_indices(len(pairs.labels), cfg.batch_size, gen)
        z, x = pairs.noise[idx], pairs.images[idx]
        t = torch.full((len(idx),), 1000.0)
        v = f(z, t, pairs.labels[idx], pairs.guidance[idx])
        return F.mse_loss((z - v).float(), x)

    return optimise(student, list(student.parameters()), loss_fn, cfg, on_step)


@contextmanager
def _capture(model: torch.nn.Module, names: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    store: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = []
    for name in names:

        def hook(_m: Any, _i: Any, out: Any, name: str = name) -> None:
            store[name] = out[0] if isinstance(out, tuple) else out

        handles.append(modules[name].register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def distill_attention(
    teacher: torch.nn.Module,
    student: torch.nn.Module,
    layers: list[str],
    trainable: list[torch.nn.Parameter],
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    on_step: StepHook | None = None,
) -> torch.nn.Module:
    """Train ``trainable`` (the replaced attention) so that ``student`` matches ``teacher``.

    ``layers`` names the attention modules whose outputs are matched one to one.
    """
    teacher = teacher.eval().requires_grad_(False)
    student.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)
    f_t, f_s = Denoiser(teacher), Denoiser(student)

    def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        idx = batch_indices(len(images), cfg.batch_size, gen)
        x0, y = images[idx], labels[idx].clone()
        y[torch.rand(len(y), generator=gen) < cfg.p_uncond] = NULL_CLASS
        noise = torch.randn(x0.shape, generator=gen)
        sigma = torch.rand(len(y), generator=gen)
        s = sigma[:, None, None, None]
        x_t = (1 - s) * x0 + s * noise
        with torch.no_grad(), _capture(teacher, layers) as feats_t:
            v_t = f_t(x_t, sigma * 1000, y).float()
        with _capture(student, layers) as feats_s:
            v_s = f_s(x_t, sigma * 1000, y).float()
        feature = sum(
            (F.mse_loss(feats_s[n].float(), feats_t[n].float()) for n in layers),
            torch.zeros(()),
        )
        return F.mse_loss(v_s, noise - x0) + 0.5 * F.mse_loss(v_s, v_t) + 0.5 * feature

    return optimise(student, trainable, loss_fn, cfg, on_step)
