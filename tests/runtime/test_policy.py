"""The sampling loop driven by the step policy: which graph runs, what each step is fed, which
tensors it carries to the next, how guidance combines — on recording runners."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from difforge.artifact.manifest import ComponentEntry, Manifest, Stage, TensorSpec
from difforge.artifact.sections import PipelineSection, Resolution, SchedulerSection
from difforge.artifact.step_plan import StepPlan
from difforge.errors import DifforgeError
from difforge.runtime import GenerateRequest, Pipeline
from difforge.runtime.guidance import ndcfg
from difforge.runtime.runners.base import Runner

FLOW = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000}
LATENT = ["batch", 1, "height", "width"]


def _entry(key: str, inputs: list[str] = (), outputs: list[str] = ()) -> ComponentEntry:  # type: ignore[assignment]
    return ComponentEntry(
        role="denoiser",
        file=f"{key}.onnx",
        inputs=[
            TensorSpec("sample", "float32", LATENT),
            TensorSpec("timestep", "float32", ["batch"]),
            TensorSpec("class_labels", "int64", ["batch"]),
            *(TensorSpec(n, "int64" if n == "shift" else "float32", [1] if n == "shift" else LATENT)
              for n in inputs),
        ],
        outputs=[TensorSpec("noise_pred", "float32", LATENT)]
        + [TensorSpec(n, "float32", LATENT) for n in outputs],
        axes={"batch": [1, 1, 4], "height": [8, 8, 8], "width": [8, 8, 8]},
        tolerance=1e-4,
    )


def _manifest(plan: StepPlan, entries: dict[str, ComponentEntry]) -> Manifest:
    return Manifest(
        stage=Stage.BUILT,
        versions={},
        source={"type": "test"},
        pipeline=PipelineSection(
            type="class-to-image",
            latent_channels=1,
            vae_scale_factor=1,
            scaling_factor=1.0,
            resolution=Resolution(8, 8, 8, 8),
            default_guidance=1.0,
            num_classes=10,
            null_class=10,
            pixel_space=True,
        ),
        scheduler=SchedulerSection("flow-euler", dict(FLOW), 4),
        components=entries,
        step_plan=plan,
    )


class Recording(Runner):
    """noise_pred = 0.1 * sample + scale (+ 0.01 * cache); "cache" out = 2 * sample."""

    def __init__(self, name: str, spec: ComponentEntry, scale: float, calls: list[Any]) -> None:
        super().__init__(name, spec)
        self.scale = scale
        self.calls = calls

    def _activate(self) -> None:
        return None

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feeds.get("sample", np.zeros_like(feeds["timestep"][:, None, None, None]))
        out = {"noise_pred": (0.1 * x + self.scale).astype(np.float32)}
        if "cache" in feeds:
            out["noise_pred"] = out["noise_pred"] + 0.01 * feeds["cache"]
        if any(t.name == "cache" for t in self.spec.outputs):
            out["cache"] = (2 * feeds["sample"]).astype(np.float32)
        self.calls.append((self.name, {k: v.copy() for k, v in feeds.items()}, out))
        return out


def _pipeline(tmp_path: Path, plan: StepPlan, entries: dict[str, ComponentEntry]) -> Any:
    calls: list[Any] = []
    manifest = _manifest(plan, entries)
    runners = {k: Recording(k, e, 1.0 + i, calls) for i, (k, e) in enumerate(entries.items())}
    return Pipeline(tmp_path, manifest, runners), calls


def test_carried_tensors_reach_the_next_step(tmp_path: Path) -> None:
    plan = StepPlan.from_dict({
        "variants": {"full": "denoiser", "shallow": "denoiser@shallow"},
        "rules": [
            {"variant": "shallow", "from": 0.25, "to": 0.5},
            {"variant": "shallow", "from": 0.75, "to": 1.0},
        ],
        "carry": {"cache": "cache"},
    })
    entries = {
        "denoiser": _entry("denoiser", outputs=["cache"]),
        "denoiser@shallow": _entry("shallow", inputs=["cache"]),
    }
    pipe, calls = _pipeline(tmp_path, plan, entries)
    result = pipe(GenerateRequest(class_label=3, steps=4, seed=1))
    assert result.request["schedule"] == ["full", "shallow", "full", "shallow"]
    assert [c[0] for c in calls] == ["denoiser", "denoiser@shallow"] * 2
    for (_, full_feeds, full_out), (_, shallow_feeds, _) in zip(
        calls[::2], calls[1::2], strict=True
    ):
        assert "cache" not in full_feeds
        np.testing.assert_array_equal(shallow_feeds["cache"], full_out["cache"])
        assert not np.array_equal(shallow_feeds["sample"], full_feeds["sample"])


def test_a_sample_free_variant_serves_a_run_of_steps_in_batched_calls(tmp_path: Path) -> None:
    plan = StepPlan.from_dict({
        "variants": {"full": "denoiser", "decoder": "denoiser@decoder"},
        "rules": [{"kind": "interval", "variant": "decoder", "interval": 1,
                   "spacing": "keys", "keys": [0, 6]}],
        "carry": {"cache": "cache"},
        "batched": {"decoder": 4},
    })
    decoder = _entry("decoder", inputs=["cache"])
    decoder.inputs = [t for t in decoder.inputs if t.name != "sample"]  # batch range 1 to 4
    entries = {"denoiser": _entry("denoiser", outputs=["cache"]), "denoiser@decoder": decoder}
    pipe, calls = _pipeline(tmp_path, plan, entries)
    result = pipe(GenerateRequest(class_label=3, steps=8, seed=1))
    assert result.request["schedule"] == ["full"] + ["decoder"] * 5 + ["full", "decoder"]
    # steps 1-5: one call of 4 steps (the plan's limit), then one of 1; step 7: one call
    assert [(c[0], len(c[1]["timestep"])) for c in calls] == [
        ("denoiser", 1), ("denoiser@decoder", 4), ("denoiser@decoder", 1),
        ("denoiser", 1), ("denoiser@decoder", 1),
    ]
    timesteps = pipe.resolve(GenerateRequest(class_label=3, steps=8)).sampler(
        pipe.manifest).timesteps
    fed = np.concatenate([c[1]["timestep"] for c in calls if c[0] == "denoiser@decoder"])
    np.testing.assert_allclose(fed, [timesteps[i] for i in (1, 2, 3, 4, 5, 7)])
    # every decoder call gets the cache of the key step before it, once per step it serves
    for (_, feeds, _), key in zip(calls[1:3] + calls[4:], (0, 0, 3), strict=True):
        steps = len(feeds["timestep"])
        np.testing.assert_array_equal(
            feeds["cache"], np.concatenate([calls[key][2]["cache"]] * steps)
        )
    seconds = result.step_seconds  # a call's time is shared among the steps it served
    assert all(s > 0 for s in seconds) and len(set(seconds[1:5])) == 1
    # a graph that reads the sample cannot serve several steps
    entries["denoiser@decoder"] = _entry("decoder", inputs=["cache"])
    with pytest.raises(DifforgeError, match="cannot serve several steps in one call"):
        _pipeline(tmp_path, plan, entries)


def test_a_carried_input_with_nothing_carried_is_refused(tmp_path: Path) -> None:
    plan = StepPlan.from_dict({
        "variants": {"full": "denoiser", "shallow": "denoiser@shallow"},
        "rules": [{"variant": "shallow", "from": 0.0, "to": 0.5}],
        "carry": {"cache": "cache"},
    })
    entries = {
        "denoiser": _entry("denoiser", outputs=["cache"]),
        "denoiser@shallow": _entry("shallow", inputs=["cache"]),
    }
    pipe, _ = _pipeline(tmp_path, plan, entries)
    with pytest.raises(DifforgeError, match="no earlier step produced it"):
        pipe(GenerateRequest(class_label=3, steps=4))


def test_per_step_tables_follow_the_request_seed(tmp_path: Path) -> None:
    plan = StepPlan.from_dict({
        "variants": {"base": "denoiser"},
        "inputs": {"shift": {"table": "categorical", "params": {"thresholds": [0.25, 0.5, 0.75]},
                             "seed": "run", "dtype": "int64", "shape": [1]}},
    })
    pipe, calls = _pipeline(tmp_path, plan, {"denoiser": _entry("denoiser", inputs=["shift"])})
    for seed in (0, 5):
        calls.clear()
        pipe(GenerateRequest(class_label=1, steps=12, seed=seed))
        fed = [int(c[1]["shift"][0]) for c in calls]
        assert fed == plan.tables(12, seed)["shift"]
    assert plan.tables(12, 0) != plan.tables(12, 5)


def test_noise_damped_guidance_takes_the_unconditional_half(tmp_path: Path) -> None:
    """Class models batch [class, null]: the weak pass must see the null half."""
    plan = StepPlan.from_dict({
        "variants": {"base": "denoiser", "strong": "denoiser@strong", "weak": "denoiser@weak"},
        "rules": [{"variant": "strong", "from": 0.0, "to": 0.5}],
        "guidance": {"mode": "ndcfg", "strong": "step_rules", "weak": "weak", "from": 0.0,
                     "to": 0.5},
    })
    entries = {k: _entry(k) for k in ("denoiser", "denoiser@strong", "denoiser@weak")}
    pipe, calls = _pipeline(tmp_path, plan, entries)
    request = GenerateRequest(class_label=3, steps=4, guidance_scale=2.0)
    pipe(request)
    assert [c[0] for c in calls] == [
        "denoiser@strong", "denoiser@weak", "denoiser@strong", "denoiser@weak",
        "denoiser", "denoiser",
    ]
    strong, weak = calls[0], calls[1]
    assert strong[1]["class_labels"].tolist() == [3, 10]
    assert weak[1]["class_labels"].tolist() == [10]  # the null class: the unconditional pass
    np.testing.assert_array_equal(weak[1]["sample"], strong[1]["sample"][1:])
    cond, uncond = np.split(strong[2]["noise_pred"], 2)
    eps = ndcfg(weak[2]["noise_pred"], uncond, cond, 2.0)
    # the sampler stepped with that combination: step 1 starts from x0 + dt * eps
    sched = pipe.resolve(request).sampler(pipe.manifest)
    x0 = strong[1]["sample"][:1]
    x1 = sched.step(eps.astype(np.float32), 0, x0)
    np.testing.assert_allclose(calls[2][1]["sample"][:1], x1, rtol=0, atol=1e-6)
    assert not np.allclose(x1, sched.step(cond, 0, x0))  # not plain conditional


def test_calibration_records_a_batched_call_once_per_step() -> None:
    from difforge.runtime.recording import Recorder

    seen: list[tuple[str, dict[str, np.ndarray], int, int]] = []
    recorder = Recorder(lambda key, feeds, traj, step: seen.append((key, feeds, traj, step)))
    recorder.start(2)
    recorder.on_step(5, 8)
    cache = np.arange(6, dtype=np.float32).reshape(6, 1)
    recorder.record("denoiser@decoder", {
        "timestep": np.array([9, 9, 7, 7, 5, 5], dtype=np.float32), "cache": cache,
    })
    recorder.record("denoiser", {"timestep": np.array([3, 3], dtype=np.float32)})
    assert [(k, traj, step) for k, _, traj, step in seen] == [
        ("denoiser@decoder", 2, 5), ("denoiser@decoder", 2, 6), ("denoiser@decoder", 2, 7),
        ("denoiser", 2, 5),
    ]
    for j, (_, feeds, _, _) in enumerate(seen[:3]):
        np.testing.assert_array_equal(feeds["timestep"], [9 - 2 * j] * 2)
        np.testing.assert_array_equal(feeds["cache"], cache[2 * j : 2 * j + 2])


def test_chosen_tokens_reach_the_next_step_once_per_guidance_half(tmp_path: Path) -> None:
    """A token selection (RAS): after each sampler step before a selecting step, the policy
    chooses from the latents' change; the graph gets one row per image, repeated for CFG."""
    selection = {"input": "active", "variant": "ras", "patch": 2, "ratio": 0.25,
                 "metric": "l2norm"}
    plan = StepPlan.from_dict({
        "variants": {"dense": "denoiser", "ras": "denoiser@ras"},
        "rules": [{"kind": "interval", "variant": "ras", "interval": 1, "spacing": "keys",
                   "keys": [0, 1, 3]}],
        "selection": selection,
    })
    ras = _entry("ras")
    ras.inputs.append(TensorSpec("active", "int64", ["batch", "active"]))
    ras.axes["active"] = [1, 4, 16]
    pipe, calls = _pipeline(tmp_path, plan, {"denoiser": _entry("denoiser"), "denoiser@ras": ras})
    result = pipe(GenerateRequest(class_label=3, steps=5, seed=1, guidance_scale=2.0))
    assert result.request["schedule"] == ["dense", "dense", "ras", "dense", "ras"]
    rule = plan.selection
    assert rule is not None
    drops = np.full((1, 16), -6.0)  # the authors' -(steps + 1)
    for step in (2, 4):
        fed = calls[step][1]["active"]
        before, after = calls[step - 1][1]["sample"][:1], calls[step][1]["sample"][:1]
        assert fed.shape == (2, 4) and np.array_equal(fed[0], fed[1])  # both CFG halves
        np.testing.assert_array_equal(fed[:1], rule.select(after - before, drops))
    assert "active" not in calls[3][1]
    # a step that recomputes chosen tokens needs a step before it that chose them
    first = StepPlan.from_dict({**plan.to_dict(), "rules": [
        {"kind": "interval", "variant": "ras", "interval": 1, "spacing": "keys", "keys": [3]}]})
    pipe, _ = _pipeline(tmp_path, first, {"denoiser": _entry("denoiser"), "denoiser@ras": ras})
    with pytest.raises(DifforgeError, match="no step before chose them"):
        pipe(GenerateRequest(class_label=3, steps=5))
    # and its graph must take them
    with pytest.raises(DifforgeError, match="has no input 'active'"):
        _pipeline(tmp_path, plan, {"denoiser": _entry("denoiser"), "denoiser@ras": _entry("r")})
