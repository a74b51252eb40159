"""Step plans: which variant runs at which step, guidance windows, per-step tables."""

from __future__ import annotations

import numpy as np

from difforge.artifact.step_plan import StepPlan
from difforge.artifact.step_tables import step_table


def test_rules_follow_ratios_of_the_step_count() -> None:
    plan = StepPlan.from_dict({
        "variants": {"base": "denoiser", "redilated": "denoiser@redilated"},
        "rules": [{"variant": "redilated", "from": 0.0, "to": 0.6}],
    })
    assert plan.schedule(50) == ["redilated"] * 30 + ["base"] * 20
    assert plan.schedule(10) == ["redilated"] * 6 + ["base"] * 4
    assert plan.schedule(1) == ["base"]  # int(0.6 * 1) == 0: like the authors' int(S * ratio)


def test_first_matching_rule_wins_and_guidance_window() -> None:
    plan = StepPlan.from_dict({
        "variants": {"base": "d", "t1": "d@t1", "t2": "d@t2"},
        "rules": [{"variant": "t1", "to": 0.4}, {"variant": "t2", "to": 0.7}],
        "guidance": {"mode": "ndcfg", "strong": "t1", "weak": "t2", "to": 0.5},
    })
    assert plan.schedule(10) == ["t1"] * 4 + ["t2"] * 3 + ["base"] * 3
    assert [plan.guidance_at(i, 10) is not None for i in range(10)] == [True] * 5 + [False] * 5


def test_categorical_table_is_seeded_and_uniform() -> None:
    quarters = {"thresholds": [0.25, 0.5, 0.75]}
    a = step_table("categorical", 4000, 3, quarters)
    assert a == step_table("categorical", 4000, 3, quarters)
    assert a != step_table("categorical", 4000, 4, quarters)
    counts = np.bincount(a, minlength=4) / len(a)
    assert set(a) == {0, 1, 2, 3}
    np.testing.assert_allclose(counts, 0.25, atol=0.03)
    # a longer run extends, never reshuffles, the table
    assert step_table("categorical", 7, 3, quarters) == a[:7]
