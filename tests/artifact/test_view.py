"""`difforge info`'s reading of a step plan: which graph runs when, and how guidance combines."""

from __future__ import annotations

from pathlib import Path

from difforge.artifact.manifest import read_manifest
from difforge.artifact.step_plan import StepPlan
from difforge.artifact.view import describe

# What `--patch redilate:scale=2,weak_scale=1.5` writes (fractions as the patch computes them).
PLAN = {
    "variants": {"base": "denoiser", "redilated": "denoiser@redilated", "weak": "denoiser@weak"},
    "rules": [{"variant": "redilated", "from": 0.0, "to": 0.6}],
    "guidance": {
        "mode": "ndcfg",
        "strong": "step_rules",
        "weak": "weak",
        "weak_rules": [{"variant": "weak", "from": 0.0, "to": 0.7000000000000001}],
        "from": 0.0,
        "to": 0.7000000000000001,
    },
}


def test_step_plan_reads_as_fractions_and_passes(tiny_sd_artifact: Path) -> None:
    manifest = read_manifest(tiny_sd_artifact)
    manifest.step_plan = StepPlan.from_dict(PLAN)
    text = describe(manifest)
    assert "  redilated: steps [0·N, 0.6·N)\n" in text
    assert "  at 20 steps: redilated ×12, base ×8\n" in text
    assert (
        "  guidance: noise-damped CFG on steps [0·N, 0.7·N) (guidance direction: the step's "
        "variant; unconditional base: weak on [0·N, 0.7·N))\n"
    ) in text
    assert "0.7000000000000001" not in text
