"""The digits training code: schedules, student initialisation, what each trainer may change."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from difforge.reference.architectures import (
    Denoiser,
    build_digits_dit,
    build_digits_unet,
    student_from_teacher,
)
from difforge.reference.distill import (
    distill_attention,
    make_couplings,
    train_one_step,
    train_reflow,
)
from difforge.reference.flow import TrainConfig, flow_sigmas, sample, train_flow


def _data(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.rand((n, 1, 32, 32), generator=gen) * 2 - 1, torch.arange(n) % 10


@pytest.mark.parametrize("steps", [1, 4, 50])
def test_flow_sigmas_match_diffusers(steps: int) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    sched.set_timesteps(steps)
    np.testing.assert_allclose(flow_sigmas(steps), sched.sigmas.numpy(), rtol=1e-6, atol=1e-7)


def test_student_starts_as_the_teachers_conditional_branch() -> None:
    teacher = build_digits_unet(0).eval()
    student = student_from_teacher(teacher).eval()
    x, y = _data(4)
    t = torch.full((4,), 500.0)
    with torch.no_grad():
        v_teacher = Denoiser(teacher)(x, t, y)
        v_student = Denoiser(student)(x, t, y, torch.full((4,), 1.7))
    torch.testing.assert_close(v_student, v_teacher)


def test_train_flow_returns_ema_weights_and_sampling_is_seeded() -> None:
    model = build_digits_dit(0)
    before = [p.detach().clone() for p in model.parameters()]
    images, labels = _data()
    ema = train_flow(model, images, labels, TrainConfig(steps=3, batch_size=4, p_uncond=0.0))
    assert ema is not model
    assert any(not torch.equal(a, b) for a, b in zip(before, ema.parameters(), strict=True))
    a = sample(ema, labels[:3], 2, 1.5, seed=5)
    b = sample(ema, labels[:3], 2, 1.5, seed=5)
    assert a.shape == (3, 1, 32, 32) and torch.equal(a, b)
    assert a.abs().max() <= 1.0


def test_students_and_couplings_run_on_tiny_budgets() -> None:
    teacher = build_digits_unet(0).eval()
    pairs = make_couplings(teacher, 6, 2, (1.0, 2.0), seed=0, batch_size=4)
    assert pairs.images.shape == pairs.noise.shape == (6, 1, 32, 32)
    assert ((pairs.guidance >= 1.0) & (pairs.guidance <= 2.0)).all()
    cfg = TrainConfig(steps=2, batch_size=3, warmup=1)
    four = train_reflow(teacher, pairs, cfg)
    one = train_one_step(four, pairs, cfg)
    assert Denoiser(one).guidance_input and Denoiser(four).guidance_input
    assert any(
        not torch.equal(a, b) for a, b in zip(four.parameters(), one.parameters(), strict=True)
    )


def test_attention_distillation_changes_only_the_replaced_layers() -> None:
    import copy

    from difforge.patches import get_patch_class

    teacher = build_digits_unet(0).eval()
    student = copy.deepcopy(teacher)
    report = get_patch_class("linfusion")().apply(student)
    layers = list(report.replaced)
    modules = dict(student.named_modules())
    trainable = [p for n in layers for p in modules[n].parameters()]
    ids = {id(p) for p in trainable}
    frozen_before = {
        n: p.detach().clone() for n, p in student.named_parameters() if id(p) not in ids
    }
    images, labels = _data()
    cfg = TrainConfig(steps=2, batch_size=4, warmup=1, ema=0.0)
    distill_attention(teacher, student, layers, trainable, images, labels, cfg)
    for name, p in student.named_parameters():
        if name in frozen_before:
            assert torch.equal(p, frozen_before[name]), name
    assert any(p.grad is not None for p in trainable)


def test_guidance_embedding_is_lcms() -> None:
    from diffusers import LatentConsistencyModelPipeline

    from difforge.exporter.wrappers import guidance_embedding

    w = torch.tensor([1.0, 1.5, 2.0, 3.25])
    ref = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w - 1.0, 32)  # type: ignore[arg-type]
    torch.testing.assert_close(guidance_embedding(w, 32), ref, rtol=1e-5, atol=1e-5)
