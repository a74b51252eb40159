"""RAS: the patch's graphs against the unpatched transformer (DiT and FLUX), the token
selection rule, the plan, the compiled artifact against an independent dense reproduction of
the authors' method (tests/patches/ras_reference.py), and the refusals."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from difforge import CompileConfig, ExportConfig, ResolutionRange, compile
from difforge.artifact.step_plan import StepPlan
from difforge.artifact.token_selection import TokenSelection
from difforge.errors import DifforgeError
from difforge.exporter.wrappers import FluxDenoiser
from difforge.patches import create_patch, parse_patch_arg
from difforge.patches.ras import RasPatch
from difforge.runtime import GenerateRequest, load
from difforge.runtime.policy import StepPolicy
from difforge.sources import load_source
from difforge.sources.presets import load_preset
from tests.cli.test_errors import assert_user_error, difforge
from tests.patches.ras_reference import ras_reference

pytestmark = pytest.mark.usefixtures("one_thread")

Call = Callable[[torch.Tensor, float], torch.Tensor]


def _model(preset: str) -> tuple[torch.nn.Module, Call, torch.Tensor]:
    """The preset's transformer, a call on latents at a timestep, and latents."""
    model = load_preset(preset, 0).denoiser.eval()
    gen = torch.Generator().manual_seed(0)
    if preset == "tiny-dit":
        x = torch.randn(2, 4, 16, 16, generator=gen)

        def call(x: torch.Tensor, t: float) -> torch.Tensor:
            labels = torch.tensor([3, 5])
            return model(x, timestep=torch.full((2,), t), class_labels=labels,
                         return_dict=False)[0]

        return model, call, x
    wrapper = FluxDenoiser(model)
    cfg: Any = model.config
    x = torch.randn(2, cfg.in_channels // 4, 16, 16, generator=gen)
    text = torch.randn(2, 7, cfg.joint_attention_dim, generator=gen)
    pooled = torch.randn(2, cfg.pooled_projection_dim, generator=gen)

    def flux(x: torch.Tensor, t: float) -> torch.Tensor:
        return wrapper(x, torch.full((2,), t), text, pooled)

    return model, flux, x


def _patch(model: torch.nn.Module, options: str) -> RasPatch:
    patch = create_patch(parse_patch_arg(f"ras:{options}"))
    assert isinstance(patch, RasPatch)
    patch.apply(model)
    return patch


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


PRESETS = ["tiny-dit", "tiny-flux"]


@pytest.mark.parametrize("preset", PRESETS)
@torch.no_grad()
def test_ratio_one_is_the_unpatched_model(preset: str) -> None:
    model, call, x = _model(preset)
    plain = [call(x, 900.0), call(0.9 * x, 700.0)]
    patch = _patch(model, "ratio=1,start=1")
    patch.set_variant("dense")
    assert _rel(call(x, 900.0), plain[0]) <= 1e-6
    patch.set_variant("ras")
    assert _rel(call(0.9 * x, 700.0), plain[1]) <= 1e-6
    assert patch._forward.active is not None and patch._forward.active.shape[1] == 64


@pytest.mark.parametrize("preset", PRESETS)
@torch.no_grad()
def test_active_rows_with_same_step_caches_are_the_dense_rows(preset: str) -> None:
    """The authors' check: with the caches holding this step's own K/V, recomputing a subset
    of tokens gives the dense output at every token."""
    model, call, x = _model(preset)
    patch = _patch(model, "ratio=0.3,start=1")
    patch.set_variant("dense")
    dense = call(x, 600.0)
    state = patch.take_state()
    names = [s.name for s in patch.state_outputs("dense")]
    assert set(state) == set(names) and names[0] == "ras_out_next"
    active = torch.stack([torch.randperm(64)[:19].sort().values for _ in range(2)])
    bound = {"ras_active": active, **{k.removesuffix("_next"): v for k, v in state.items()}}
    patch.set_variant("ras")
    patch.bind_state(bound)
    try:
        partial = call(x, 600.0)
    finally:
        patch.bind_state(None)
    assert _rel(partial, dense) <= 1e-5


@pytest.mark.parametrize("preset", PRESETS)
@torch.no_grad()
def test_cached_tokens_keep_the_previous_output_and_kv(preset: str) -> None:
    model, call, x = _model(preset)
    patch = _patch(model, "ratio=0.5,start=1")
    patch.set_variant("dense")
    call(x, 900.0)
    cached = {k.removesuffix("_next"): torch.randn_like(v) for k, v in patch.take_state().items()}
    active = torch.stack([torch.arange(0, 64, 2), torch.arange(1, 64, 2)])
    patch.set_variant("ras")
    patch.bind_state({"ras_active": active, **cached})
    try:
        call(0.9 * x, 800.0)
        written = patch.take_state()
    finally:
        patch.bind_state(None)
    for name, before in cached.items():
        after = written[name + "_next"].flatten(2)
        before = before.flatten(2)
        for row in range(2):
            keep = torch.ones(64, dtype=torch.bool)
            keep[active[row]] = False
            assert torch.equal(after[row][:, keep], before[row][:, keep])  # untouched
            assert not torch.equal(after[row][:, ~keep], before[row][:, ~keep])  # recomputed


@torch.no_grad()
def test_a_pytorch_loop_chooses_from_its_own_inputs() -> None:
    model, call, x = _model("tiny-dit")
    patch = _patch(model, "ratio=0.25,start=1")
    patch.set_variant("dense")
    call(x, 900.0)
    x2 = x + 0.1 * torch.randn_like(x)
    patch.set_variant("ras")
    call(x2, 800.0)
    rule = patch.token_selection()
    drops = np.zeros((2, 64))
    expected = rule.select((x2 - x).numpy(), drops)
    assert patch._forward.active is not None
    np.testing.assert_array_equal(patch._forward.active.numpy(), expected)
    assert expected.shape == (2, 16)


def test_a_ras_step_before_any_dense_step_is_refused() -> None:
    model, call, x = _model("tiny-dit")
    patch = _patch(model, "ratio=0.5,start=1")
    patch.set_variant("ras")
    with pytest.raises(DifforgeError, match="a RAS step ran before any dense step"):
        call(x, 500.0)


# ---------------------------------------------------------------- the selection rule


def test_selection_caches_the_highest_scores_and_counts_drops() -> None:
    rule = TokenSelection("ras_active", "ras", patch=1, ratio=0.5, starvation=0.1)
    delta = np.zeros((1, 2, 2, 2))
    delta[0, 0] = [[1.0, 4.0], [2.0, 3.0]]  # per-pixel std grows with the value
    drops = np.zeros((1, 4))
    np.testing.assert_array_equal(rule.select(delta, drops), [[0, 2]])  # 4.0, 3.0 cached
    np.testing.assert_array_equal(drops, [[0, 1, 0, 1]])
    drops[0, 2] = 60.0  # starvation: a token cached often scores higher, and is cached again
    np.testing.assert_array_equal(rule.select(delta, drops), [[0, 3]])
    low = replace(rule, high_ratio=0.0)  # the cached tokens from the bottom instead
    np.testing.assert_array_equal(low.select(delta, np.zeros((1, 4))), [[1, 3]])
    assert rule.skip(4) == 2 and replace(rule, ratio=1.0).active_count(4) == 4


def test_scores_average_each_token_over_its_pixels() -> None:
    rng = np.random.default_rng(0)
    delta = rng.standard_normal((2, 3, 4, 6))
    std = TokenSelection("a", "ras", patch=2, ratio=0.5).scores(delta)
    norm = TokenSelection("a", "ras", patch=2, ratio=0.5, metric="l2norm").scores(delta)
    pixel_std = torch.from_numpy(delta).std(dim=1)  # unbiased, as the authors'
    expected = pixel_std[1, 2:4, 4:6].mean()  # image 1, token row 1, column 2
    assert std.shape == (2, 6) and np.isclose(std[1, 1 * 3 + 2], float(expected))
    assert np.isclose(norm[0, 0], np.linalg.norm(delta[0, :, :2, :2], axis=0).mean())
    with pytest.raises(DifforgeError, match="this latent has 1"):
        TokenSelection("a", "ras", patch=2, ratio=0.5).scores(delta[:, :1])


def test_plan_round_trips_the_selection_and_refuses_bad_ones() -> None:
    model, _, _ = _model("tiny-dit")
    patch = _patch(model, "ratio=0.4,start=2,resets=5+7,metric=l2norm")
    plan = StepPlan(
        variants={"dense": "denoiser", "ras": "denoiser@ras"},
        rules=tuple(patch.step_rules()),
        carry=patch.carry(),
        selection=patch.token_selection(),
    )
    again = StepPlan.from_dict(plan.to_dict())
    assert again.selection == plan.selection and again.selection is not None
    assert again.selection.metric == "l2norm" and again.selection.patch == 2
    assert plan.schedule(8) == ["dense"] * 2 + ["ras"] * 3 + ["dense", "ras", "dense"]
    assert again.selection.samplers == ("flow-euler",)
    again.selection.check_sampler("flow-euler")
    with pytest.raises(DifforgeError, match="cannot sample with ddim"):
        again.selection.check_sampler("ddim")
    bad = plan.to_dict()
    bad["selection"]["ratio"] = 0.0
    with pytest.raises(DifforgeError, match="ratio"):
        StepPlan.from_dict(bad)
    bad["selection"].update(ratio=0.5, variant="nope")
    with pytest.raises(DifforgeError, match="unknown variant 'nope'"):
        StepPlan.from_dict(bad)


# ---------------------------------------------------------------- the compiled artifact

OPTIONS = "ratio=0.5,start=2,resets=5,metric=l2norm"


@pytest.fixture(scope="module")
def digits_ras(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits-dit (one channel: the l2norm score) with both graphs verified against PyTorch,
    the RAS graph at sampled token subsets of every size its axis allows."""
    out = tmp_path_factory.mktemp("ras") / "art"
    cfg = ExportConfig(output=out, model=Path("models/digits-dit"), patches=[f"ras:{OPTIONS}"],
                       max_batch=2)
    return compile(CompileConfig(export=cfg))


@pytest.fixture(scope="module")
def flux_ras(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ras-flux") / "art"
    cfg = ExportConfig(
        output=out, preset="tiny-flux", patches=["ras:ratio=0.5,start=2,resets=5"],
        resolution=ResolutionRange(128, 128, 128), max_batch=1,
        verify=False,  # held to the reference end to end below, tighter than a check
    )
    return compile(CompileConfig(export=cfg))


def _run(
    artifact: Path, request: GenerateRequest, monkeypatch: pytest.MonkeyPatch,
    plan: StepPlan | None = None,
) -> dict[str, Any]:
    """Run ``artifact`` (under ``plan`` if given): every denoiser call's feeds and outputs,
    the sampler's sigmas and the final latents."""
    import difforge.runtime.pipeline as pipeline_mod

    pipe = load(artifact)
    if plan is not None:
        pipe.policy = StepPolicy(plan, pipe.manifest.components)
    seen: dict[str, Any] = {"calls": []}
    for key in ("denoiser", "denoiser@ras"):
        runner = pipe.runners[key]

        def record(feeds: dict[str, np.ndarray], key: str = key, infer: Any = runner.infer
                   ) -> dict[str, np.ndarray]:
            out = infer(feeds)
            seen["calls"].append((key, {k: v.copy() for k, v in feeds.items()}, out))
            return out

        runner.infer = record  # type: ignore[method-assign]
    loop = pipeline_mod.sample

    def keep(*args: Any, **kwargs: Any) -> Any:
        result = loop(*args, **kwargs)
        seen["latents"] = result.latents.copy()
        return result

    monkeypatch.setattr(pipeline_mod, "sample", keep)
    result = pipe(request)
    seen["schedule"] = result.request["schedule"]
    seen["sigmas"] = pipe.resolve(request).sampler(pipe.manifest).sigmas
    return seen


def _digits_request(steps: int) -> GenerateRequest:
    latents = np.random.default_rng(4).standard_normal((2, 1, 32, 32)).astype(np.float32)
    return GenerateRequest(class_label=[3, 7], steps=steps, seed=1, latents=latents)


@pytest.mark.slow
def test_digits_artifact_is_the_authors_method(
    digits_ras: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two images (chosen separately), dense at 0, 1 and 5: the torch-free run's final
    latents are the dense reproduction's on the same transformer."""
    steps = 8
    # written in format 4 (a format-3 runtime would ignore the selection); others stay 3
    assert json.loads((digits_ras / "manifest.json").read_text())["format_version"] == 4
    seen = _run(digits_ras, _digits_request(steps), monkeypatch)
    assert seen["schedule"] == ["dense"] * 2 + ["ras"] * 3 + ["dense"] + ["ras"] * 2
    ras_calls = [c for c in seen["calls"] if c[0] == "denoiser@ras"]
    assert all(c[1]["ras_active"].shape == (2, 128) for c in ras_calls)
    assert not np.array_equal(*ras_calls[0][1]["ras_active"])  # each image its own tokens
    # each call is fed exactly what the call before it left
    for (_, _, before), (_, feeds, _) in zip(seen["calls"], seen["calls"][1:], strict=False):
        if "ras_k0" in feeds:
            np.testing.assert_array_equal(feeds["ras_k0"], before["ras_k0_next"])
            np.testing.assert_array_equal(feeds["ras_out"], before["ras_out_next"])
    model = load_source(model="models/digits-dit").denoiser
    first = torch.from_numpy(seen["calls"][0][1]["sample"])
    labels = {"class_labels": torch.tensor([3, 7])}

    def reference(**options: Any) -> np.ndarray:
        run = dict(ratio=0.5, start=2, resets=(5,), metric="l2norm") | options
        with torch.no_grad():
            return ras_reference(model, first, seen["sigmas"].tolist(), labels, **run).numpy()

    ref = reference()
    assert _close(seen["latents"], ref) < 1e-4
    assert _close(reference(ratio=1.0), ref) > 1e-3  # not vacuous: RAS changes the result


@pytest.mark.slow
def test_ratio_one_is_the_uncached_artifact(
    digits_ras: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = load(digits_ras).manifest.plan
    assert plan.selection is not None
    whole = replace(plan, selection=replace(plan.selection, ratio=1.0))
    dense = replace(plan, rules=(), selection=None, carry={})
    ours = _run(digits_ras, _digits_request(6), monkeypatch, whole)
    plain = _run(digits_ras, _digits_request(6), monkeypatch, dense)
    assert ours["schedule"].count("ras") == 3 and set(plain["schedule"]) == {"dense"}
    assert _close(ours["latents"], plain["latents"]) <= 1e-6


@pytest.mark.slow
def test_flux_artifact_is_the_authors_method(
    flux_ras: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = 7
    latents = np.random.default_rng(5).standard_normal((1, 4, 16, 16)).astype(np.float32)
    request = GenerateRequest(prompt="a lighthouse", steps=steps, seed=2, latents=latents)
    seen = _run(flux_ras, request, monkeypatch)
    assert seen["schedule"].count("ras") == 4
    feeds = seen["calls"][0][1]
    cond = {k: torch.from_numpy(feeds[k]) for k in ("encoder_hidden_states", "pooled_projections")}
    model = load_preset("tiny-flux", 0).denoiser
    with torch.no_grad():
        ref = ras_reference(
            model, torch.from_numpy(feeds["sample"]), seen["sigmas"].tolist(), cond,
            ratio=0.5, start=2, resets=(5,),
        ).numpy()
    assert _close(seen["latents"], ref) < 1e-4


def _close(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--preset", "tiny-sd", "--patch", "ras"], "DiTTransformer2DModel"),
        (["--preset", "tiny-dit", "--patch", "deepcache"], "UNet2DConditionModel"),
        (["--preset", "tiny-dit", "--patch", "ras:ratio=0"], "ratio"),
        (["--preset", "tiny-dit", "--patch", "ras:resets=a+b"], "resets"),
        (["--preset", "tiny-dit", "--patch", "ras"], "flow-matching models"),
        (["--model", "models/digits-dit", "--patch", "ras"], "use metric=l2norm"),
        (["--preset", "tiny-dit", "--patch", "ras", "--patch", "ras"], "given 2 times"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    result = difforge("compile", "-q", *args, "-o", str(tmp_path / "art"))
    assert_user_error(result, needle)
    assert not (tmp_path / "art").exists()
