"""Self-attention time from ONNX Runtime's per-node profile (difforge.profile.attention)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from difforge.artifact.feeds import sample_feeds
from difforge.errors import DifforgeError
from difforge.profile.attention import (
    attention_modules,
    attention_part,
    profile_attention,
    split_trace,
)
from difforge.profile.modules import node_modules, unit_path
from difforge.profile.ops import Trace, read_runs, read_trace

BLOCK = "unet.up_blocks.1.attentions.0.transformer_blocks.0"


def test_attention_parts() -> None:
    assert attention_part(f"{BLOCK}.attn1") == "core"
    assert attention_part(f"{BLOCK}.attn1.processor") == "core"
    assert attention_part(f"{BLOCK}.attn1.to_q") == "proj"
    assert attention_part(f"{BLOCK}.attn1.to_out.0") == "proj"
    assert attention_part(f"{BLOCK}.attn1.to_q_.3") == "proj"  # LinFusion's q MLP
    assert attention_part(f"{BLOCK}.attn2") is None  # cross-attention
    assert attention_part(f"{BLOCK}.ff.net.0.proj") is None
    assert attention_part("attn1") is None  # the root attribute is not a module of the model
    assert attention_part("") is None and attention_part(None) is None
    assert attention_part(f"{BLOCK}.attn2.to_q", name="attn2") == "proj"


def test_split_trace_sorts_kernels_into_core_projections_and_unmapped() -> None:
    modules = {
        "node_MultiHeadAttention_1": f"{BLOCK}.attn1",
        "node_linear_3": f"{BLOCK}.attn1.to_q",
        "conv2d_7": "unet.down_blocks.0.resnets.0.conv1",
        "node_MultiHeadAttention_2": f"{BLOCK}.attn2",
    }
    trace = Trace(
        "denoiser",
        run_s=0.02,
        kernels=[
            ("node_MultiHeadAttention_1", "MultiHeadAttention", 0.008),
            ("node_linear_3", "MatMul", 0.001),
            ("node_linear_3_token_4", "MatMul", 0.0005),  # ONNX Runtime's decorated name
            ("conv2d_7_nchwc", "Conv", 0.004),
            ("node_MultiHeadAttention_2", "MultiHeadAttention", 0.002),
            ("reorder_output_9", "ReorderOutput", 0.003),
        ],
    )
    split = split_trace(trace, modules)
    assert split.core == pytest.approx(0.008)
    assert split.proj == pytest.approx(0.0015)
    assert split.kernel == pytest.approx(0.0185)
    assert split.run == 0.02
    assert split.unmapped_ops == {"ReorderOutput": pytest.approx(0.003)}
    assert split.unmapped == pytest.approx(0.003 / 0.0185)
    assert split.as_dict()["unmapped"] == split.unmapped
    cross = split_trace(trace, modules, name="attn2")
    assert cross.core == pytest.approx(0.002) and cross.proj == 0


def _event(cat: str, name: str, ts: int, dur: int, op: str = "") -> dict[str, object]:
    return {"cat": cat, "name": name, "ts": ts, "dur": dur, "args": {"op_name": op}}


def test_read_runs_splits_a_trace_per_session_run(tmp_path: Path) -> None:
    events = [
        _event("Session", "model_run", 100, 50),
        _event("Node", "a_kernel_time", 110, 10, "MatMul"),
        _event("Node", "b_kernel_time", 130, 5, "Add"),
        _event("Node", "b_fence_before", 129, 1),  # not a kernel event
        _event("Node", "c_kernel_time", 170, 3, "Add"),  # between runs: in none
        _event("Session", "model_run", 200, 40),
        _event("Node", "a_kernel_time", 205, 20, "MatMul"),
    ]
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(events), encoding="utf-8")
    runs = read_runs("denoiser", path)
    assert [r.run_s for r in runs] == [pytest.approx(50e-6), pytest.approx(40e-6)]
    assert [[k[0] for k in r.kernels] for r in runs] == [["a", "b"], ["a"]]
    assert runs[1].kernels == [("a", "MatMul", pytest.approx(20e-6))]
    for i, run in enumerate(runs):  # the same events read_trace gives for one run
        assert read_trace("denoiser", path, first=i, count=1).kernels == run.kernels


def test_deepest_module_paths_aggregate_to_the_report_units(tiny_sd_artifact: Path) -> None:
    graph = tiny_sd_artifact / "denoiser" / "model.onnx"
    deep, units = attention_modules(graph), node_modules(graph)
    assert deep.keys() == units.keys()
    assert all(unit_path(path) == units[node] for node, path in deep.items())
    parts = {attention_part(p) for p in deep.values()}
    assert {"core", "proj", None} <= parts


@pytest.mark.slow
def test_profile_attention_on_a_real_artifact(tiny_sd_artifact: Path) -> None:
    import difforge

    entry = difforge.info(tiny_sd_artifact).components["denoiser"]
    feeds = [sample_feeds(entry, sizes={"batch": 1, "height": n, "width": n}) for n in (32, 64)]
    small, large = profile_attention(tiny_sd_artifact, feeds, runs=2, threads=2)
    assert len(small) == len(large) == 2
    for run in small + large:
        assert run.core > 0 and run.proj > 0
        assert run.core + run.proj < run.kernel <= run.run * 1.01
        # every kernel is placed but ONNX Runtime's own layout conversions (their share of the
        # time varies with the machine's load, so the ops are checked, not a time fraction)
        assert set(run.unmapped_ops) <= {"ReorderInput", "ReorderOutput"}, run.unmapped_ops
        assert run.unmapped_s == pytest.approx(sum(run.unmapped_ops.values()))
    # full attention at 4x the tokens: the core grows far faster than the projections
    assert min(r.core for r in large) > 4 * min(r.core for r in small)
    assert min(r.core for r in large) > 10 * max(r.proj for r in large)


def test_profile_attention_refuses_an_unknown_component(tiny_sd_artifact: Path) -> None:
    with pytest.raises(DifforgeError, match="no component 'denoiser@redilated'"):
        profile_attention(tiny_sd_artifact, [], component="denoiser@redilated")
    with pytest.raises(DifforgeError, match="runs must be at least 1"):
        profile_attention(tiny_sd_artifact, [], runs=0)
    assert profile_attention(tiny_sd_artifact, []) == []
