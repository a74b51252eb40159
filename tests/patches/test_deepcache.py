"""DeepCache: the patch's two variants against an independent reproduction of the authors'
module-caching helper (tests/patches/deepcache_reference.py), its schedules against theirs,
its graphs against PyTorch, the runtime's carried feature, and its refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from difforge import CompileConfig, ExportConfig, compile
from difforge.artifact.interval_rule import IntervalRule
from difforge.artifact.step_plan import STEP_VARIANT, NoiseDampedGuidance, StepPlan
from difforge.errors import DifforgeError
from difforge.exporter.prepare import check_state_levels
from difforge.exporter.specs import Axis
from difforge.patches import create_patch, parse_patch_arg
from difforge.patches.deepcache import DeepCachePatch
from difforge.runtime import GenerateRequest, load
from tests.cli.test_errors import assert_user_error, difforge
from tests.patches.deepcache_reference import DeepCacheReference, quad_center_full_steps
from tests.patches.test_deepcache_reference import _inputs, _run, _unet

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]


def _patched(mid: str | None, options: str) -> tuple[Any, DeepCachePatch]:
    unet = _unet(mid)
    patch = create_patch(parse_patch_arg(f"deepcache:{options}"))
    assert isinstance(patch, DeepCachePatch)
    patch.apply(unet)
    return unet, patch


@pytest.mark.parametrize(
    ("mid", "branch"),
    [(None, 0), (None, 1), (None, 2), (None, 4), (None, 5), (None, 6),
     ("UNetMidBlock2DCrossAttn", 0), ("UNetMidBlock2DCrossAttn", 8)],
)
@torch.no_grad()
def test_variants_equal_the_authors_helper_step_by_step(mid: str | None, branch: int) -> None:
    """Full steps and shallow ones, driven by the patch's own step rule, give exactly what the
    authors' helper gives on the same U-Net and inputs."""
    steps = 7
    unet, patch = _patched(mid, f"interval=3,branch={branch}")
    rule = patch.step_rules()[0]
    ours = []
    for i in range(steps):
        patch.set_variant("shallow" if rule.covers(i, steps) else "full")
        ours.append(_run(unet, *_inputs(i)))
    patch.undo()
    ref = DeepCacheReference(unet, interval=3, branch=branch)
    ref.enable()
    theirs = []
    for i in range(steps):
        ref.set_step(i)
        theirs.append(_run(unet, *_inputs(i)))
    ref.disable()
    plain = [_run(unet, *_inputs(i)) for i in range(steps)]
    for i in range(steps):
        torch.testing.assert_close(ours[i], theirs[i], rtol=0, atol=1e-6, msg=f"step {i}")
    # not vacuous: the shallow steps really differ from the uncached U-Net
    assert not torch.allclose(ours[1], plain[1], atol=1e-4)
    torch.testing.assert_close(ours[3], plain[3], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("steps", "interval", "center", "power"),
    [(50, 3, 15, 1.4), (50, 2, 10, 1.2), (20, 3, 15, 1.4), (25, 5, 12, 1.5), (100, 4, 30, 1.4)],
)
def test_quad_spacing_is_the_authors(steps: int, interval: int, center: int, power: float) -> None:
    rule = IntervalRule("shallow", interval, spacing="quad", center=center, power=power)
    assert rule.refresh_steps(steps) == quad_center_full_steps(steps, interval, center, power)


def test_impossible_quad_spacing_is_one_line() -> None:
    rule = IntervalRule("shallow", 2, spacing="quad", center=5, power=1.2)
    with pytest.raises(ValueError):
        quad_center_full_steps(10, 2, 5, 1.2)
    with pytest.raises(DifforgeError, match="no quadratic schedule"):
        rule.refresh_steps(10)


def test_uniform_rule_and_its_manifest_round_trip() -> None:
    rule = IntervalRule("shallow", 3, start=2)
    assert rule.refresh_steps(10) == [0, 1, 2, 5, 8]
    assert IntervalRule("shallow", 1).refresh_steps(4) == [0, 1, 2, 3]
    plan = StepPlan(
        variants={"full": "denoiser", "shallow": "denoiser@shallow"},
        rules=(rule,),
        carry={"deepcache_feature": "deepcache_feature"},
    )
    again = StepPlan.from_dict(plan.to_dict())
    assert again == plan
    quad = IntervalRule("shallow", 2, spacing="quad", center=9, power=1.3)
    assert StepPlan.from_dict(StepPlan(plan.variants, (quad,)).to_dict()).rules == (quad,)
    assert again.schedule(6) == ["full", "full", "full", "shallow", "shallow", "full"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("deepcache:interval=0", "below the minimum"),
        ("deepcache:spacing=log", "is not one of uniform, quad"),
        ("deepcache:spacing=quad,start=3", "start applies to spacing=uniform only"),
    ],
)
def test_bad_options_are_refused(text: str, message: str) -> None:
    with pytest.raises(DifforgeError, match=message):
        create_patch(parse_patch_arg(text))


@pytest.mark.parametrize(
    ("mid", "branch", "message"),
    [(None, 9, "has 3 up blocks"), (None, 7, "recomputes every up block"),
     (None, 8, "recomputes every up block")],
)
def test_branches_the_unet_does_not_have_are_refused(
    mid: str | None, branch: int, message: str
) -> None:
    """Three up blocks: branches 0 to 8. Layers 1 and 2 of the deepest recompute all of its
    resnets (it has two), whose input would be the mid block's output, which this U-Net lacks."""
    unet = _unet(mid)
    patch = create_patch(parse_patch_arg(f"deepcache:branch={branch}"))
    with pytest.raises(DifforgeError, match=message):
        patch.apply(unet)
    assert not any("forward" in vars(m) for m in unet.modules())


def test_a_dit_is_refused() -> None:
    from diffusers import DiTTransformer2DModel

    dit = DiTTransformer2DModel(num_attention_heads=1, attention_head_dim=8, in_channels=1,
                                num_layers=1, sample_size=8, patch_size=2,
                                num_embeds_ada_norm=10)
    with pytest.raises(DifforgeError, match="does not apply to DiTTransformer2DModel"):
        create_patch(parse_patch_arg("deepcache")).apply(dit)


@pytest.fixture(scope="module")
def digits_deepcache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deepcache") / "art"
    cfg = ExportConfig(
        output=out, model=ROOT / "models" / "digits-unet", patches=["deepcache:interval=3"]
    )
    return compile(CompileConfig(export=cfg))


@pytest.mark.slow
def test_shallow_graph_drops_the_deep_blocks(digits_deepcache: Path) -> None:
    pipe = load(digits_deepcache)
    full = pipe.manifest.components["denoiser"]
    shallow = pipe.manifest.components["denoiser@shallow"]
    assert [t.name for t in full.outputs] == ["noise_pred", "deepcache_feature"]
    assert [t.name for t in shallow.inputs][-1] == "deepcache_feature"

    def convs(entry: Any) -> int:
        graph = onnx.load(str(digits_deepcache / entry.file), load_external_data=False)
        return sum(n.op_type in ("Conv", "FusedConv") for n in graph.graph.node)

    # conv_in, one resnet (2 convs + shortcut), conv_out, of the U-Net's
    assert convs(shallow) <= 5 < convs(full)


@pytest.mark.slow
def test_runtime_carries_the_last_full_steps_feature(digits_deepcache: Path) -> None:
    pipe = load(digits_deepcache)
    full, shallow = pipe.runners["denoiser"], pipe.runners["denoiser@shallow"]
    emitted: list[np.ndarray] = []
    taken: list[np.ndarray] = []
    full_infer, shallow_infer = full.infer, shallow.infer

    def record_full(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = full_infer(feeds)
        emitted.append(out["deepcache_feature"].copy())
        return out

    def record_shallow(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        taken.append(feeds["deepcache_feature"].copy())
        return shallow_infer(feeds)

    full.infer, shallow.infer = record_full, record_shallow  # type: ignore[method-assign]
    result = pipe(GenerateRequest(class_label=3, steps=8, seed=1))
    assert result.request["schedule"] == ["full", "shallow", "shallow"] * 2 + ["full", "shallow"]
    assert len(emitted) == 3 and len(taken) == 5
    for index, feature in zip((0, 0, 1, 1, 2), taken, strict=True):
        np.testing.assert_array_equal(feature, emitted[index])


@pytest.mark.parametrize(
    ("patches", "needle"),
    [
        (["deepcache", "raunet"], "only one step-dependent patch per model"),
        (["deepcache", "deepcache:interval=5"], "patch 'deepcache' is given 2 times"),
    ],
)
def test_two_caching_or_stepped_patches_are_refused(
    tmp_path: Path, patches: list[str], needle: str
) -> None:
    args = [a for p in patches for a in ("--patch", p)]
    done = difforge("compile", "-q", "--preset", "tiny-sd", *args, "-o", str(tmp_path / "art"))
    assert_user_error(done, needle)
    assert not (tmp_path / "art").exists()


@pytest.mark.parametrize(
    ("latent", "fits"),
    [(Axis(4, 8, 16, multiple=4), True), (Axis(4, 8, 16, multiple=2), False),
     (Axis(12, 12, 12), True), (Axis(10, 10, 10), False)],
)
def test_a_feature_at_a_coarser_level_needs_latents_it_divides(latent: Axis, fits: bool) -> None:
    """Branch 6 keeps its feature at a quarter of the latent: refused before any export when
    the build's latent sizes are not all multiples of 4, in one line."""
    _, patch = _patched("UNetMidBlock2DCrossAttn", "branch=6")
    assert patch.state_outputs("full")[0].divisor == 4
    axes = {"batch": Axis(1, 1, 2), "height": latent, "width": latent}
    if fits:
        check_state_levels(patch, axes)
    else:
        with pytest.raises(DifforgeError, match="lives at 1/4 of the latent"):
            check_state_levels(patch, axes)


def test_a_plan_cannot_carry_state_under_noise_damped_guidance() -> None:
    with pytest.raises(DifforgeError, match="supports one or the other"):
        StepPlan(
            variants={"full": "denoiser", "shallow": "denoiser@shallow"},
            guidance=NoiseDampedGuidance(STEP_VARIANT, "full", 0.0, 0.5),
            carry={"deepcache_feature": "deepcache_feature"},
        )
