"""Rectified-flow training and sampling for the digits models (torch, CPU, seeded).

Convention (diffusers' ``FlowMatchEulerDiscreteScheduler``, SD3, FLUX):
``x_σ = (1 − σ)·x₀ + σ·ε``, the model predicts ``v = ε − x₀`` at timestep ``σ·1000``, and
Euler steps ``x ← x + (σ_next − σ)·v`` go from σ = 1 (noise) to σ = 0.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from difforge.reference.architectures import NULL_CLASS, Denoiser

StepHook = Callable[[int, float], None]


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.0
    ema: float = 0.999
    #: Labels replaced by the null class (classifier-free guidance training); DiT drops
    #: labels itself (its LabelEmbedding, 10%), so its trainer passes 0 here.
    p_uncond: float = 0.1
    #: bf16 autocast (AVX512-BF16 on this CPU): about 1.4x faster, weights stay fp32.
    bf16: bool = True
    seed: int = 0


def flow_sigmas(steps: int) -> np.ndarray:
    """σ_0 … σ_N (σ_N = 0) exactly as difforge's runtime (and diffusers) schedule them."""
    from difforge.artifact.schedulers.flow_euler import FlowMatchEuler

    return FlowMatchEuler({"num_train_timesteps": 1000, "shift": 1.0}, steps).sigmas


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


class EMA:
    """Exponential moving average of weights with the usual warm-up of the decay."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for ema_p, p in zip(self.model.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1.0 - decay)


def optimise(
    model: torch.nn.Module,
    params: list[torch.nn.Parameter],
    loss_fn: Callable[[int, torch.Generator], torch.Tensor],
    cfg: TrainConfig,
    on_step: StepHook | None = None,
) -> torch.nn.Module:
    """AdamW over ``params`` for ``cfg.steps``; returns the EMA copy of ``model`` (eval mode),
    or ``model`` itself when ``cfg.ema`` is 0 (patched models whose hooks a copy would not
    carry over)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = EMA(model, cfg.ema) if cfg.ema > 0 else None
    model.train()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = loss_fn(step, gen)
        opt.zero_grad(set_to_none=True)
        loss.float().backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if ema is not None:
            ema.update(model)
        if on_step is not None:
            on_step(step + 1, float(loss.detach()))
    model.eval()
    return ema.model if ema is not None else model


def batch_indices(n: int, batch: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, n, (batch,), generator=gen)


def train_flow(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    on_step: StepHook | None = None,
) -> torch.nn.Module:
    """Train a class-conditional rectified flow from scratch; returns the EMA weights."""
    torch.manual_seed(cfg.seed)  # DiT's label dropout draws from the global generator
    f = Denoiser(model)

    def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        idx = batch_indices(len(images), cfg.batch_size, gen)
        x0, y = images[idx], labels[idx].clone()
        drop = torch.rand(len(y), generator=gen) < cfg.p_uncond
        y[drop] = NULL_CLASS
        noise = torch.randn(x0.shape, generator=gen)
        sigma = torch.rand(len(y), generator=gen)
        s = sigma[:, None, None, None]
        x_t = (1 - s) * x0 + s * noise
        return F.mse_loss(f(x_t, sigma * 1000, y).float(), noise - x0)

    return optimise(model, list(model.parameters()), loss_fn, cfg, on_step)


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    labels: torch.Tensor,
    steps: int,
    guidance: float,
    seed: int,
    batch_size: int = 250,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Euler samples (N, 1, 32, 32) in [-1, 1] (clamped): classifier-free guidance for a
    teacher (``guidance`` > 1 doubles each batch), the guidance input for a student."""
    f = Denoiser(model.eval())
    sigmas = torch.from_numpy(flow_sigmas(steps))
    if noise is None:
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn((len(labels), 1, 32, 32), generator=gen)
    out = []
    for start in range(0, len(labels), batch_size):
        x = noise[start : start + batch_size].clone()
        y = labels[start : start + batch_size]
        n = len(y)
        w = torch.full((n,), float(guidance))
        cfg = guidance > 1.0 and not f.guidance_input
        for i in range(steps):
            t = torch.full((n,), float(sigmas[i]) * 1000)
            if cfg:
                null = torch.full_like(y, NULL_CLASS)
                v_c, v_u = f(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null])).chunk(2)
                v = v_u + guidance * (v_c - v_u)
            else:
                v = f(x, t, y, w)
            x = x + (sigmas[i + 1] - sigmas[i]) * v
        out.append(x.clamp(-1.0, 1.0))
    return torch.cat(out)
