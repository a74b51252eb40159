"""CLEAR: processors against dense-mask references, key counts, pooling, grid, weights, undo."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from patch_testing import clear_mask, dense_local_attention, masked_attention, rel_err, tiny_dit
from safetensors.torch import save_file

import difforge.patches.clear_attention as clear_module
from difforge.errors import DifforgeError
from difforge.patches import create_patch
from difforge.sources.tiny_flux import build_tiny_flux_transformer, pack_latents, prepare_ids

TOL = {torch.float32: 1e-6, torch.float64: 1e-10}

# The fp64 runs go through the real op and through a dense float64 stand-in for it: the
# stand-in checks the processors' own arithmetic, the real op (which accumulates in float64
# for float64 inputs) is held to the same 1e-10.
PRECISIONS = [
    pytest.param(torch.float32, "op", id="fp32"),
    pytest.param(torch.float64, "op", id="fp64"),
    pytest.param(torch.float64, "dense", id="fp64-dense-op"),
]


def _check(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, op: str) -> None:
    err = rel_err(out, ref)
    assert err <= TOL[dtype], (op, err)


@pytest.fixture
def op_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[Any, ...]]]:
    """Record every call of the custom op made by the CLEAR processors."""
    calls: list[tuple[Any, ...]] = []
    real = clear_module.local_attention_op()

    def recording(*args: Any) -> torch.Tensor:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(clear_module, "local_attention_op", lambda: recording)
    yield calls


# --------------------------------------------------------------------------- the mask itself


@pytest.mark.parametrize(("radius", "interior"), [(8, 193), (16, 793), (32, 3205)])
def test_interior_key_counts(radius: int, interior: int) -> None:
    side = 2 * radius + 1
    mask = clear_mask(side, side, 0, radius)
    centre = radius * side + radius
    assert int(mask[centre].sum()) == interior


def test_border_counts_and_dense_text_rows() -> None:
    h, w, t, r = 7, 9, 3, 3
    mask = clear_mask(h, w, t, r)
    counts = mask[t:, t:].sum(1).view(h, w)
    # Strict disc of radius 3: |dy|, |dx| <= 2 all pass (8 < 9), |dy| = 3 never does, so
    # 25 keys inside, 15 on an edge (half: dx >= 0), 9 in a corner (quarter).
    assert counts[0, 0] == counts[0, -1] == counts[-1, 0] == counts[-1, -1] == 9
    half = sum(1 for dy in range(-2, 3) for dx in range(0, 3) if dy * dy + dx * dx < 9)
    assert counts[3, 0] == half == 15
    assert counts[3, 4] == 25
    assert mask[:t].all()  # text rows see everything
    assert mask[:, :t].all()  # every query sees all text


def test_down_variant_mask_rules() -> None:
    h, w, t, r, f = 4, 8, 2, 2, 2
    mask = clear_mask(h, w, t, r, down=f)
    p = (h // f) * (w // f)
    assert mask.shape == (t + h * w, t + h * w + p)
    assert mask[:t, : t + h * w].all() and not mask[:t, t + h * w :].any()
    assert mask[t:, t + h * w :].all() and mask[t:, :t].all()


# --------------------------------------------------------------------------- DiT


def _dit_attention(dtype: torch.dtype, spec: str) -> tuple[torch.nn.Module, Any]:
    dit = tiny_dit().to(dtype)
    create_patch(spec).apply(dit)
    attn = dit.transformer_blocks[1].attn1
    return attn, attn.processor


def _dense_dit(
    attn: torch.nn.Module,
    x: torch.Tensor,
    h: int,
    w: int,
    radius: int,
    down: int,
    proportional: bool,
) -> torch.Tensor:
    a = copy.deepcopy(attn).double()
    b, n, c = x.shape
    q, k, v = (
        layer(x.double()).view(b, n, a.heads, -1).transpose(1, 2)
        for layer in (a.to_q, a.to_k, a.to_v)
    )
    d = q.shape[-1]
    scale = 1 / math.sqrt(d)
    if proportional:
        scale = math.sqrt(math.log(n * (10 if down > 1 else 1), 4608) / d)
    if down > 1:
        grid = lambda t: t.transpose(2, 3).reshape(b, a.heads * d, h, w)  # noqa: E731
        pool = lambda t: F.avg_pool2d(grid(t), down).reshape(b, a.heads, d, -1).transpose(2, 3)  # noqa: E731
        k, v = torch.cat([k, pool(k)], 2), torch.cat([v, pool(v)], 2)
    out = masked_attention(q, k, v, clear_mask(h, w, 0, radius, down), scale)
    return a.to_out[0](out.transpose(1, 2).reshape(b, n, c))


@pytest.mark.parametrize(("dtype", "op"), PRECISIONS)
@pytest.mark.parametrize(
    ("spec", "h", "w"),
    [
        ("clear:radius=3", 6, 6),
        ("clear:radius=2", 5, 9),
        ("clear:radius=4,proportional=true", 8, 6),
        ("clear:radius=2,down=2", 6, 8),
        ("clear:radius=3,down=3,proportional=1", 6, 9),
    ],
)
def test_dit_processor_matches_dense(
    dtype: torch.dtype, op: str, spec: str, h: int, w: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    if op == "dense":
        monkeypatch.setattr(clear_module, "local_attention_op", lambda: dense_local_attention)
    attn, processor = _dit_attention(dtype, spec)
    processor.grid.size = (h, w)
    x = torch.randn(2, h * w, 32, dtype=torch.float64)
    with torch.no_grad():
        out = attn(x.to(dtype))
        ref = _dense_dit(attn, x, h, w, processor.radius, processor.down, processor.proportional)
    assert out.dtype == dtype
    _check(out, ref, dtype, op)


@pytest.mark.parametrize("size", [8, 12, 16])
def test_dit_grid_follows_the_latent(size: int, op_calls: list[tuple[Any, ...]]) -> None:
    dit = tiny_dit()
    x = torch.randn(1, 4, size, size)
    t, c = torch.tensor([10]), torch.tensor([3])
    with torch.no_grad():
        ref = dit(x, t, c).sample
    patch = create_patch("clear:radius=100")  # a disc covering the grid = full attention
    report = patch.apply(dit)
    assert report.replaced == ["transformer_blocks.0.attn1", "transformer_blocks.1.attn1"]
    with torch.no_grad():
        out = dit(x, t, c).sample
    assert rel_err(out, ref) <= 1e-6
    assert len(op_calls) == 2
    assert all(call[3:6] == (size // 2, size // 2, 0) for call in op_calls)
    assert all(call[6:] == (100, "disc", 0.25, 0) for call in op_calls)


# --------------------------------------------------------------------------- FLUX


def _flux_inputs(h: int, w: int, t: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    img_ids, txt_ids = prepare_ids(h, w, t)
    return {
        "hidden_states": pack_latents(torch.randn(1, 4, 2 * h, 2 * w, generator=g)),
        "encoder_hidden_states": torch.randn(1, t, 32, generator=g),
        "pooled_projections": torch.randn(1, 32, generator=g),
        "timestep": torch.tensor([0.5]),
        "img_ids": img_ids,
        "txt_ids": txt_ids,
    }


def _dense_flux(
    attn: Any,
    hidden: torch.Tensor,
    context: torch.Tensor | None,
    rope: Any,
    h: int,
    w: int,
    radius: int,
    down: int,
    proportional: bool,
) -> Any:
    from diffusers.models.embeddings import apply_rotary_emb

    a = copy.deepcopy(attn).double()
    heads, d = a.heads, a.head_dim

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.double().unflatten(-1, (heads, d))

    q, k, v = (
        a.norm_q(split(a.to_q(hidden.double()))),
        a.norm_k(split(a.to_k(hidden.double()))),
        split(a.to_v(hidden.double())),
    )
    if context is not None:
        cq = a.norm_added_q(split(a.add_q_proj(context.double())))
        ck = a.norm_added_k(split(a.add_k_proj(context.double())))
        q, k = torch.cat([cq, q], 1), torch.cat([ck, k], 1)
        v = torch.cat([split(a.add_v_proj(context.double())), v], 1)
    rope64 = tuple(r.double() for r in rope)
    q, k = apply_rotary_emb(q, rope64, sequence_dim=1), apply_rotary_emb(k, rope64, sequence_dim=1)
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))
    n = q.shape[2]
    t = n - h * w
    scale = 1 / math.sqrt(d)
    if proportional:
        scale = math.sqrt(math.log(n * (10 if down > 1 else 1), 4608) / d)
    if down > 1:

        def pool(x: torch.Tensor) -> torch.Tensor:
            img = x[:, :, t:].transpose(2, 3).reshape(1, heads * d, h, w)
            return F.avg_pool2d(img, down).reshape(1, heads, d, -1).transpose(2, 3)

        k, v = torch.cat([k, pool(k)], 2), torch.cat([v, pool(v)], 2)
    out = masked_attention(q, k, v, clear_mask(h, w, t, radius, down), scale)
    out = out.transpose(1, 2).flatten(2, 3)
    if context is None:
        return out
    return a.to_out[0](out[:, t:]), a.to_add_out(out[:, :t])


@pytest.mark.parametrize(("dtype", "op"), PRECISIONS)
@pytest.mark.parametrize(
    ("spec", "h", "w"),
    [
        ("clear:radius=3", 6, 8),
        ("clear:radius=2,proportional=true", 5, 7),
        ("clear:radius=2,down=2", 4, 6),
        ("clear:radius=3,down=2,proportional=true", 6, 6),
    ],
)
def test_flux_processors_match_dense(
    dtype: torch.dtype, op: str, spec: str, h: int, w: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    if op == "dense":
        monkeypatch.setattr(clear_module, "local_attention_op", lambda: dense_local_attention)
    model = build_tiny_flux_transformer().to(dtype)
    create_patch(spec).apply(model)
    inputs = _flux_inputs(h, w)
    rope = model.pos_embed(torch.cat([inputs["txt_ids"], inputs["img_ids"]]))
    t = inputs["encoder_hidden_states"].shape[1]
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(1, h * w, 32, generator=g, dtype=torch.float64)
    context = torch.randn(1, t, 32, generator=g, dtype=torch.float64)
    double = model.transformer_blocks[0].attn
    single = model.single_transformer_blocks[1].attn
    processor = double.processor
    processor.grid.size = (h, w)
    rope_d = tuple(r.to(dtype) for r in rope)
    with torch.no_grad():
        img_out, txt_out = double(hidden.to(dtype), context.to(dtype), image_rotary_emb=rope_d)
        ref_img, ref_txt = _dense_flux(
            double,
            hidden,
            context,
            rope,
            h,
            w,
            processor.radius,
            processor.down,
            processor.proportional,
        )
        joint = torch.cat([context, hidden], 1)
        s_out = single(joint.to(dtype), image_rotary_emb=rope_d)
        s_ref = _dense_flux(
            single,
            joint,
            None,
            rope,
            h,
            w,
            processor.radius,
            processor.down,
            processor.proportional,
        )
    for out, ref in ((img_out, ref_img), (txt_out, ref_txt), (s_out, s_ref)):
        _check(out, ref, dtype, op)


def test_pooled_keys_are_avg_pool_of_post_rope_keys(op_calls: list[tuple[Any, ...]]) -> None:
    from diffusers.models.embeddings import apply_rotary_emb

    model = build_tiny_flux_transformer()
    create_patch("clear:radius=2,down=2").apply(model)
    h, w, t = 4, 6, 5
    inputs = _flux_inputs(h, w, t)
    with torch.no_grad():
        model(**inputs)
    # First call: double block 0. Rebuild its post-RoPE keys independently.
    q, k, _, height, width, num_global, radius, window, scale, num_pooled = op_calls[0]
    assert (height, width, num_global, num_pooled) == (h, w, t, (h // 2) * (w // 2))
    assert q.shape[2] == t + h * w and k.shape[2] == t + h * w + num_pooled
    assert (radius, window, scale) == (2, "disc", 0.25)
    block = model.transformer_blocks[0]
    attn = block.attn
    with torch.no_grad():
        temb = model.time_text_embed(inputs["timestep"] * 1000, inputs["pooled_projections"])
        x = block.norm1(model.x_embedder(inputs["hidden_states"]), emb=temb)[0]
        ctx = block.norm1_context(
            model.context_embedder(inputs["encoder_hidden_states"]), emb=temb
        )[0]
        keys = torch.cat(
            [
                attn.norm_added_k(attn.add_k_proj(ctx).unflatten(-1, (2, 16))),
                attn.norm_k(attn.to_k(x).unflatten(-1, (2, 16))),
            ],
            1,
        )
        rope = model.pos_embed(torch.cat([inputs["txt_ids"], inputs["img_ids"]]))
        keys = apply_rotary_emb(keys, rope, sequence_dim=1).transpose(1, 2)
    assert rel_err(k[:, :, : t + h * w], keys) <= 1e-6
    image = keys[:, :, t:].transpose(2, 3).reshape(1, 32, h, w)
    pooled = F.avg_pool2d(image, 2).reshape(1, 2, 16, -1).transpose(2, 3)
    assert rel_err(k[:, :, t + h * w :], pooled) <= 1e-6
    assert torch.equal(attn.processor.spatial_weight, torch.full((1, 1, 1, 2, 1, 2, 1), 0.25))


def test_key_counts_through_the_op(op_calls: list[tuple[Any, ...]]) -> None:
    # Probe: q = 0 gives uniform weights over the visible keys; text values 1, others 0,
    # so an image query's output is T / (T + its visible image and pooled keys).
    model = build_tiny_flux_transformer()
    h, w, t, r = 7, 9, 3, 3
    create_patch(f"clear:radius={r}").apply(model)
    with torch.no_grad():
        model(**_flux_inputs(h, w, t))
    args = list(op_calls[0][3:])
    assert args[:3] == [h, w, t]
    q = torch.zeros(1, 1, t + h * w, 4)
    v = torch.zeros(1, 1, t + h * w, 4)
    v[:, :, :t, 0] = 1.0
    out = clear_module.local_attention_op()(q, torch.randn(1, 1, t + h * w, 4), v, *args)
    counts = (t / out[0, 0, t:, 0] - t).round().long().view(h, w)
    assert torch.equal(counts, clear_mask(h, w, t, r)[t:, t:].sum(1).view(h, w))
    assert counts[0, 0] == 9 and counts[3, 4] == 25
    assert torch.allclose(out[0, 0, :t, 0], torch.full((t,), t / (t + h * w)))  # dense text rows


def test_flux_grid_from_kwargs_or_img_ids(
    op_calls: list[tuple[Any, ...]], diffusers_logs: None, caplog: pytest.LogCaptureFixture
) -> None:
    model = build_tiny_flux_transformer()
    inputs = _flux_inputs(4, 6)
    with torch.no_grad():
        ref = model(**inputs).sample
        create_patch("clear:radius=100").apply(model)
        derived = model(**inputs).sample
        explicit = model(**inputs, joint_attention_kwargs={"clear_grid": (4, 6)}).sample
    assert torch.equal(derived, explicit) and rel_err(derived, ref) <= 1e-6
    assert {call[3:5] for call in op_calls} == {(4, 6)}
    assert len(op_calls) == 8  # 2 double + 2 single blocks, twice
    assert "are not expected" not in caplog.text
    shuffled = dict(inputs, img_ids=inputs["img_ids"].flip(0))
    with pytest.raises(DifforgeError, match="img_ids are not a row-major grid"):
        model(**shuffled)


def test_down_needs_a_divisible_grid() -> None:
    model = build_tiny_flux_transformer()
    create_patch("clear:down=4").apply(model)
    with pytest.raises(DifforgeError, match="token grid 4x6 is not divisible by down=4"):
        model(**_flux_inputs(4, 6))


def test_weights_load_and_undo(tmp_path: Path) -> None:
    model = build_tiny_flux_transformer()
    inputs = _flux_inputs(4, 4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        ref = model(**inputs).sample
    tuned = {
        "transformer_blocks.0.attn.to_q.weight": torch.randn(32, 32),
        "transformer_blocks.0.attn.to_out.0.bias": torch.randn(32),
        "single_transformer_blocks.1.attn.to_v.bias": torch.randn(32),
        "transformer_blocks.1.attn.processor.spatial_weight": torch.rand(1, 1, 1, 2, 1, 2, 1),
    }
    path = tmp_path / "clear_local_8_down_2.safetensors"
    save_file(tuned, str(path))
    patch = create_patch(f"clear:radius=8,down=2,weights={path}")
    report = patch.apply(model)
    assert "loaded 4 tensors" in report.notes[0]
    for key, value in tuned.items():
        assert torch.equal(model.state_dict()[key], value)
    assert report.count == 4 and "clear_grid" in report.notes[-1]
    patch.undo()
    assert list(model.state_dict()) == list(state)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.equal(model(**inputs).sample, ref)


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        (
            {"transformer_blocks.0.attn.add_q_proj.weight": torch.zeros(32, 32)},
            "'transformer_blocks.0.attn.add_q_proj.weight' is not a to_q/to_k/to_v/to_out",
        ),
        (
            {"transformer_blocks.0.attn.to_q.weight": torch.zeros(16, 32)},
            "has shape (16, 32), expected (32, 32)",
        ),
        (
            {
                "transformer_blocks.0.attn.processor.spatial_weight": torch.zeros(
                    1, 1, 1, 2, 1, 2, 1
                )
            },
            "'transformer_blocks.0.attn.processor.spatial_weight' is not a",
        ),
        ({"transformer_blocks.9.attn.to_q.weight": torch.zeros(32, 32)}, "is not a to_q"),
    ],
)
def test_bad_weights(tmp_path: Path, tensors: dict[str, torch.Tensor], message: str) -> None:
    path = tmp_path / "w.safetensors"
    save_file(tensors, str(path))
    model = build_tiny_flux_transformer()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(DifforgeError) as info:
        create_patch(f"clear={path}").apply(model)  # down=1: no spatial_weight
    assert message in str(info.value)
    assert list(model.state_dict()) == list(state)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_dit_undo_is_bit_identical() -> None:
    dit = tiny_dit()
    x, t, c = torch.randn(1, 4, 16, 16), torch.tensor([10]), torch.tensor([3])
    state = {k: v.clone() for k, v in dit.state_dict().items()}
    processors = {n: m.processor for n, m in dit.named_modules() if n.endswith("attn1")}
    with torch.no_grad():
        ref = dit(x, t, c).sample
    patch = create_patch("clear:radius=2,down=2")
    patch.apply(dit)
    assert "transformer_blocks.0.attn1.processor.spatial_weight" in dit.state_dict()
    with torch.no_grad():
        assert not torch.allclose(dit(x, t, c).sample, ref)
    patch.undo()
    assert list(dit.state_dict()) == list(state)
    assert {n: m.processor for n, m in dit.named_modules() if n.endswith("attn1")} == processors
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in dit.modules())
    with torch.no_grad():
        assert torch.equal(dit(x, t, c).sample, ref)
