"""Checks of the RAS reference itself (tests/patches/ras_reference.py)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from diffusers import DiTTransformer2DModel

from difforge.sources.presets import tiny_dit_transformer
from difforge.sources.tiny_flux import build_tiny_flux_transformer
from tests.patches.ras_reference import ras_reference, ras_steps, select_active

pytestmark = pytest.mark.usefixtures("one_thread")

SIGMAS = torch.linspace(1.0, 0.0, 8).tolist()  # 7 steps
KINDS = ["dit", "flux"]


def _model(kind: str) -> Any:
    """tiny-dit's and tiny-flux's transformers, seeded, with no layer left at zero (the
    presets' own builders)."""
    if kind == "dit":
        return tiny_dit_transformer(0)
    return build_tiny_flux_transformer(0)


def _inputs(kind: str, batch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    latents = torch.randn(batch, 4, 16, 16, generator=g)
    if kind == "dit":
        return latents, {"class_labels": torch.tensor([3, 8][:batch])}
    return latents, {
        "encoder_hidden_states": torch.randn(batch, 5, 32, generator=g),
        "pooled_projections": torch.randn(batch, 32, generator=g),
    }


@torch.no_grad()
def _plain(model: Any, latents: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
    """The Euler loop over the unpatched model (FLUX packing by pixel_(un)shuffle)."""
    x = latents
    b, c, hh, ww = x.shape
    for s0, s1 in itertools.pairwise(SIGMAS):
        if isinstance(model, DiTTransformer2DModel):
            t = torch.tensor([s0 * 1000.0] * b)
            v = model(x, timestep=t, class_labels=cond["class_labels"], return_dict=False)[0][:, :c]
        else:
            packed = F.pixel_unshuffle(x, 2).flatten(2).transpose(1, 2)
            ids = torch.tensor([[0.0, r, q] for r in range(hh // 2) for q in range(ww // 2)])
            out = model(
                hidden_states=packed,
                encoder_hidden_states=cond["encoder_hidden_states"],
                pooled_projections=cond["pooled_projections"],
                timestep=torch.tensor([s0] * b),
                img_ids=ids,
                txt_ids=torch.zeros(cond["encoder_hidden_states"].shape[1], 3),
                guidance=None,
                return_dict=False,
            )[0]
            v = F.pixel_shuffle(out.transpose(1, 2).reshape(b, 4 * c, hh // 2, ww // 2), 2)
        x = x + (s1 - s0) * v
    return x


def _processors(model: Any) -> list[type]:
    return [type(m.processor) for m in model.modules() if hasattr(m, "set_processor")]


@pytest.mark.parametrize("kind", KINDS)
def test_ratio_one_is_plain_euler(kind: str) -> None:
    model = _model(kind)
    latents, cond = _inputs(kind, 1)
    before = _processors(model)
    plain = _plain(model, latents, cond)
    assert float((plain - latents).abs().max()) > 0.5  # the model is not trivial
    out = ras_reference(model, latents, SIGMAS, cond, ratio=1.0, start=1, resets=(4,))
    torch.testing.assert_close(out, plain, rtol=0, atol=1e-6 * float(plain.abs().max()))
    assert _processors(model) == before  # the original processors are back


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("metric", "high_ratio", "resets"), [("std", 1.0, ()), ("l2norm", 0.5, (4,))]
)
def test_ras_differs_from_plain(kind: str, metric: str, high_ratio: float, resets: Any) -> None:
    model = _model(kind)
    latents, cond = _inputs(kind, 1)
    plain = _plain(model, latents, cond)
    out = ras_reference(
        model, latents, SIGMAS, cond, 0.5, 2, resets, high_ratio=high_ratio, metric=metric
    )
    assert bool(torch.isfinite(out).all())
    assert float((out - plain).abs().max()) > 1e-3


def _pixels(active: torch.Tensor, p: int) -> torch.Tensor:
    """[B, T] token mask -> [B, 1, 16, 16] pixel mask (row-major tokens of p x p pixels)."""
    n = 16 // p
    return active.view(-1, 1, n, n).repeat_interleave(p, 2).repeat_interleave(p, 3)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("high_ratio", [1.0, 0.5])
def test_cached_tokens_reuse_the_previous_output(kind: str, high_ratio: float) -> None:
    model = _model(kind)
    latents, cond = _inputs(kind, 1)
    steps = list(ras_steps(model, latents, SIGMAS, cond, 0.5, 2, (5,), high_ratio=high_ratio))
    assert [s.active is None for s in steps] == [True, True, False, False, False, True, False]
    for prev, step in itertools.pairwise(steps):
        ds = SIGMAS[step.index + 1] - SIGMAS[step.index]
        torch.testing.assert_close(step.x_next, step.x + ds * step.v)
        v_prev = (prev.x_next - prev.x) / (SIGMAS[prev.index + 1] - SIGMAS[prev.index])
        v = (step.x_next - step.x) / ds
        if step.active is None:
            torch.testing.assert_close(step.v, step.raw, rtol=0, atol=0)
            continue
        assert int((~step.active).sum()) == 32  # int((1 - 0.5) * 64) cached
        cached = ~_pixels(step.active, 2).expand_as(v)
        torch.testing.assert_close(v[cached], v_prev[cached], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(step.raw[cached], v_prev[cached], atol=1e-3)
        torch.testing.assert_close(step.v[~cached], step.raw[~cached], rtol=0, atol=0)
    # Each selection is made from the filled delta of the step before, drop_cnt from -(N + 1).
    drop = torch.full((64,), -float(len(SIGMAS)))
    for prev, step in itertools.pairwise(steps):
        if step.active is not None:
            delta = prev.x_next - prev.x
            chosen = select_active(delta[0], drop, 2, 32, 0.1, high_ratio, "std")
            assert torch.equal(chosen, step.active[0])


@pytest.mark.parametrize("kind", KINDS)
def test_kv_cache_holds_the_last_computed_rows(kind: str, monkeypatch: Any) -> None:
    """Every attention sees each image token's K/V from the last step that computed it."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    sdpa = F.scaled_dot_product_attention

    def spy(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kw: Any) -> torch.Tensor:
        seen.append((k[:, :, -64:].clone(), v[:, :, -64:].clone()))  # the 64 image rows
        return sdpa(q, k, v, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    latents, cond = _inputs(kind, 1)
    # high_ratio 0.5: the cached set changes between RAS steps (at 1.0 the starvation factor
    # exp(0.1 * drop_cnt) favours the tokens cached before, and the set stays put here)
    model = _model(kind)
    cfg = model.config
    layers = cfg.num_layers + (cfg.num_single_layers if kind == "flux" else 0)
    steps = list(ras_steps(model, latents, SIGMAS, cond, 0.5, 2, (5,), high_ratio=0.5))
    monkeypatch.undo()
    kv = torch.stack([torch.stack(pair) for pair in seen])  # [steps * layers, 2, B, H, 64, D]
    kv = kv.unflatten(0, (len(steps), -1))
    assert kv.shape[1] == layers  # every self-attention was seen once a step
    last = torch.zeros(64, dtype=torch.long)  # the last step that computed each token
    for step in steps:
        active = torch.ones(64, dtype=torch.bool) if step.active is None else step.active[0]
        if step.index == 3:  # some cached rows come from RAS step 2, not dense step 1
            assert bool((~active & (last == 2)).any())
        last = torch.where(active, step.index, last)
        # kv[last[j], layer, :, :, :, j] for each token j, as [layer, 2, B, H, 64, D]
        expected = kv[last, :, :, :, :, torch.arange(64)].permute(1, 2, 3, 4, 0, 5)
        torch.testing.assert_close(kv[step.index], expected, rtol=0, atol=0)


def _perturb_tokens(model: Any, call: int, tokens: list[int]) -> None:
    """Make the model's ``call``-th forward see its input changed at ``tokens`` (p = 2)."""
    calls = [0]

    def hook(module: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        calls[0] += 1
        if calls[0] - 1 != call:
            return None
        if isinstance(module, DiTTransformer2DModel):
            x = args[0].clone()
            for j in tokens:
                r, q = divmod(j, 8)
                x[:, :, 2 * r : 2 * r + 2, 2 * q : 2 * q + 2] += 3.0
            return (x, *args[1:]), kwargs
        packed = kwargs["hidden_states"].clone()
        packed[:, tokens] += 3.0
        return args, {**kwargs, "hidden_states": packed}

    model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("kind", KINDS)
def test_cached_tokens_do_not_reach_a_ras_step(kind: str) -> None:
    """On a RAS step, the active tokens see the cached ones only through the K/V cache."""
    latents, cond = _inputs(kind, 1)
    args = (SIGMAS, cond, 0.5, 2, (5,))
    steps = list(ras_steps(_model(kind), latents, *args))
    ref = steps[-1].x_next
    active = steps[3].active
    assert active is not None
    cached = [int(j) for j in torch.nonzero(~active[0]).flatten()]
    fresh = int(torch.nonzero(active[0])[0])

    def perturbed(call: int, tokens: list[int]) -> torch.Tensor:
        model = _model(kind)
        _perturb_tokens(model, call, tokens)
        return ras_reference(model, latents, *args)

    torch.testing.assert_close(perturbed(3, cached), ref, rtol=0, atol=1e-6)
    assert float((perturbed(3, [fresh]) - ref).abs().max()) > 1e-4  # an active token does
    assert float((perturbed(1, cached) - ref).abs().max()) > 1e-4  # so does a dense step


@pytest.mark.parametrize("kind", KINDS)
def test_batch_selects_per_image(kind: str) -> None:
    model = _model(kind)
    latents, cond = _inputs(kind, 2)
    args = (SIGMAS, cond, 0.5, 2, (5,))
    both = ras_reference(model, latents, *args, high_ratio=0.7)
    for i in range(2):
        one = {k: v[i : i + 1] for k, v in cond.items()}
        alone = ras_reference(model, latents[i : i + 1], SIGMAS, one, 0.5, 2, (5,), high_ratio=0.7)
        torch.testing.assert_close(both[i : i + 1], alone, rtol=1e-5, atol=1e-5)
    active = [s.active for s in ras_steps(model, latents, *args) if s.active is not None]
    assert any(not torch.equal(a[0], a[1]) for a in active)  # the images did choose apart


def _delta(scores: list[list[float]]) -> torch.Tensor:
    """A [4, 4, 4] delta (p = 2, 4 tokens) whose per-pixel channel std is ``scores``."""
    s = torch.tensor(scores).repeat_interleave(2, 0).repeat_interleave(2, 1)
    sign = torch.tensor([1.0, -1.0, 1.0, -1.0]).view(4, 1, 1)
    return sign * s * (3.0 / 4.0) ** 0.5  # unbiased std of (a, -a, a, -a) is a * sqrt(4/3)


def test_selection_on_a_hand_made_delta() -> None:
    delta = _delta([[1.0, 4.0], [2.0, 3.0]])  # token scores 1, 4, 2, 3 (row-major)
    drop = torch.zeros(4)
    active = select_active(delta, drop, 2, skip=2, starvation=0.1, high_ratio=1.0, metric="std")
    assert active.tolist() == [True, False, True, False]  # the two highest are cached
    assert drop.tolist() == [0.0, 1.0, 0.0, 1.0]

    drop = torch.tensor([0.0, 0.0, 20.0, 0.0])  # 2 * e^2 > 4: token 2 now scores highest
    active = select_active(delta, drop, 2, 2, 0.1, 1.0, "std")
    assert active.tolist() == [True, False, False, True]
    assert drop.tolist() == [0.0, 1.0, 21.0, 0.0]

    drop = torch.zeros(4)  # high_ratio 0.5: the lowest and the highest are cached
    assert select_active(delta, drop, 2, 2, 0.1, 0.5, "std").tolist() == [False, False, True, True]
    assert drop.tolist() == [1.0, 1.0, 0.0, 0.0]  # scores now 1.1, 4.4, 2, 3
    assert select_active(delta, drop, 2, 2, 0.1, 0.0, "std").tolist() == [False, True, False, True]
    assert drop.tolist() == [2.0, 1.0, 1.0, 0.0]
    assert select_active(delta, torch.zeros(4), 2, 0, 0.1, 1.0, "std").all()

    # A patch scores the mean of its pixels; l2norm is the norm over channels.
    delta = torch.zeros(2, 4, 4)
    delta[0, 0, 0] = 8.0  # token 0: pixel norms (8, 0, 0, 0) -> 2.0
    delta[:, 0, 2:] = 1.0  # token 1: (1.41, 1.41, 0, 0) -> 0.71
    delta[0, 2:, :2] = 3.0  # token 2: 3.0
    delta[1, 2:, 2:] = 1.5  # token 3: 1.5
    top = select_active(delta, torch.zeros(4), 2, 1, 0.0, 1.0, "l2norm")
    assert top.tolist() == [True, True, False, True]
    low = select_active(delta, torch.zeros(4), 2, 3, 0.0, 0.0, "l2norm")
    assert low.tolist() == [False, False, True, False]
