"""Time each stage of a generation over repeated runs after warm-up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from difforge.profile.stats import summarize
from difforge.runtime import GenerateRequest, Pipeline

STAGES = ("conditioning", "denoiser", "scheduler_and_host", "vae_decoder")


@dataclass
class StageRuns:
    """Raw samples of every timed run at one resolution."""

    resolution: int
    batch: int
    steps: int
    totals: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    #: one list of per-call denoiser seconds per run
    step_seconds: list[list[float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        stages = {name: summarize(vals) for name, vals in self.stages.items()}
        other = [
            total - sum(self.stages[s][i] for s in STAGES) for i, total in enumerate(self.totals)
        ]
        calls = [s for run in self.step_seconds for s in run]
        return {
            "resolution": self.resolution,
            "batch": self.batch,
            "steps": self.steps,
            "runs": len(self.totals),
            "total": summarize(self.totals),
            "stages": stages,
            "other": summarize(other),
            "denoiser_call": summarize(calls),
            # per-step median across runs: the timeline plot
            "step_timeline": [
                float(sorted(col)[len(col) // 2]) for col in zip(*self.step_seconds, strict=True)
            ],
        }


def request_for(
    pipeline: Pipeline, resolution: int, batch: int, steps: int | None, seed: int = 0
) -> GenerateRequest:
    """``batch`` images at ``resolution``: prompts or class labels, as the artifact takes."""
    return pipeline.example_request(
        batch, steps=steps, seed=seed, height=resolution, width=resolution
    )


def time_stages(
    pipeline: Pipeline,
    resolution: int,
    batch: int,
    steps: int | None,
    runs: int,
    warmup: int,
    on_run: Callable[[int, int], None] | None = None,
) -> StageRuns:
    """Run ``warmup`` untimed then ``runs`` timed generations; collect every stage's seconds."""
    request = request_for(pipeline, resolution, batch, steps)
    for _ in range(warmup):
        pipeline(request)
    result: StageRuns | None = None
    for i in range(runs):
        out = pipeline(request)
        if result is None:
            result = StageRuns(resolution, int(out.request["batch"]), int(out.request["steps"]))
        result.totals.append(out.timings["total"])
        for stage in STAGES:
            result.stages[stage].append(out.timings[stage])
        result.step_seconds.append(list(out.step_seconds))
        if on_run is not None:
            on_run(i + 1, runs)
    assert result is not None, "runs must be at least 1"
    return result
