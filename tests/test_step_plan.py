"""Step plans (variant per step, per-step inputs) and weight sharing between variant graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from difforge.export.components import Component
from difforge.export.onnx_export import export_component
from difforge.export.shared_weights import share_weights
from difforge.export.specs import Axis, ComponentSpec, Tensor
from difforge.runtime.step_inputs import msw_msa_shift
from difforge.runtime.step_plan import StepPlan


def test_rules_follow_ratios_of_the_step_count() -> None:
    plan = StepPlan.from_manifest({
        "variants": {"base": "denoiser", "redilated": "denoiser@redilated"},
        "rules": [{"variant": "redilated", "from": 0.0, "to": 0.6}],
    })
    assert plan.schedule(50) == ["redilated"] * 30 + ["base"] * 20
    assert plan.schedule(10) == ["redilated"] * 6 + ["base"] * 4
    assert plan.schedule(1) == ["base"]  # int(0.6 * 1) == 0: like the authors' int(S * ratio)


def test_first_matching_rule_wins_and_guidance_window() -> None:
    plan = StepPlan.from_manifest({
        "variants": {"base": "d", "t1": "d@t1", "t2": "d@t2"},
        "rules": [{"variant": "t1", "to": 0.4}, {"variant": "t2", "to": 0.7}],
        "guidance": {"mode": "ndcfg", "strong": "t1", "weak": "t2", "to": 0.5},
    })
    assert plan.schedule(10) == ["t1"] * 4 + ["t2"] * 3 + ["base"] * 3
    assert [plan.guidance_at(i, 10) is not None for i in range(10)] == [True] * 5 + [False] * 5


def test_shift_table_is_seeded_and_uniform() -> None:
    a = msw_msa_shift(4000, seed=3)
    assert a == msw_msa_shift(4000, seed=3)
    assert a != msw_msa_shift(4000, seed=4)
    counts = np.bincount(a, minlength=4) / len(a)
    assert set(a) == {0, 1, 2, 3}
    np.testing.assert_allclose(counts, 0.25, atol=0.03)
    assert msw_msa_shift(7, 3) == a[:7]  # a longer run extends, never reshuffles, the table


class Dilated(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.dilation = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.dilation  # read at trace time: one clean graph per variant
        return torch.nn.functional.conv2d(x, self.conv.weight, self.conv.bias, padding=d,
                                          dilation=d)


def test_variants_share_one_weight_file(tmp_path: Path) -> None:
    module = Dilated()
    spec = ComponentSpec(
        role="toy",
        inputs=(Tensor("x", "float32", ("batch", 8, "h", "w")),),
        outputs=(Tensor("y", "float32", ("batch", 8, "h", "w")),),
        axes={"batch": Axis(1, 1, 2), "h": Axis(8, 12, 16), "w": Axis(8, 12, 16)},
    )
    paths = []
    for d in (1, 2):
        module.dilation = d
        paths.append(export_component(Component(spec, module), tmp_path / f"model@{d}.onnx"))
    sizes = share_weights(paths, min_bytes=256)
    assert sizes["referenced_bytes"] == 2 * module.conv.weight.numel() * 4
    assert sizes["stored_bytes"] < 1.5 * module.conv.weight.numel() * 4
    x = torch.randn(2, 8, 13, 11)
    for d, path in zip((1, 2), paths, strict=True):
        module.dilation = d
        got = ort.InferenceSession(str(path)).run(None, {"x": x.numpy()})[0]
        np.testing.assert_allclose(got, module(x).detach().numpy(), rtol=1e-5, atol=1e-5)
        assert path.stat().st_size < 4096  # the graph itself holds no weights
