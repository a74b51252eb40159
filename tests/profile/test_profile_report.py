"""report.json: schema, additive stage times, per-op coverage, roofline and sweep sanity."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from difforge.errors import DifforgeError
from difforge.profile.report import schema, validate

pytestmark = pytest.mark.slow


def test_report_validates_against_its_schema(report: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(schema())
    jsonschema.validate(report, schema())
    assert report["schema_version"] == 2


def test_a_broken_report_is_refused(report: dict[str, Any]) -> None:
    broken = copy.deepcopy(report)
    del broken["latency"]["stages"]["denoiser"]
    with pytest.raises(DifforgeError, match="latency/stages"):
        validate(broken)


def test_stage_times_add_up_to_the_total(report: dict[str, Any]) -> None:
    lat = report["latency"]
    stages = sum(s["mean"] for s in lat["stages"].values())
    total = lat["total"]["mean"]
    assert abs(total - stages) <= 0.05 * total, (stages, total)
    assert lat["runs"] == 3 and len(lat["step_timeline"]) == 4


def test_op_grouping_covers_the_profiled_time(report: dict[str, Any]) -> None:
    ops = report["ops"]
    grouped = sum(r["seconds"] for r in ops["by_op_type"])
    # Every kernel event lands in exactly one op-type group; how much of the session's wall
    # time is kernel time (vs scheduling gaps) depends on machine load, so only a sanity bound.
    assert grouped == pytest.approx(ops["kernel_s"])
    assert grouped >= 0.5 * ops["profiled_s"]
    assert sum(r["seconds"] for r in ops["by_module"]) == pytest.approx(ops["kernel_s"])
    assert ops["module_coverage"] >= 0.8
    names = {r["name"] for r in ops["by_module"] if r["component"] == "denoiser"}
    assert any(n.startswith("attn1 in ") for n in names), names
    assert {r["component"] for r in ops["by_op_type"]} == {
        "text_encoder",
        "denoiser",
        "vae_decoder",
    }


def test_self_attention_time_is_split_out(report: dict[str, Any], profile_out: Path) -> None:
    rows = report["ops"]["attention"]
    assert [r["component"] for r in rows] == ["denoiser"]  # CLIP and the VAE have no attn1
    (row,) = rows
    assert row["module"] == "attn1" and row["core_s"] > 0 and row["proj_s"] > 0
    kernel = sum(r["seconds"] for r in report["ops"]["by_op_type"] if r["component"] == "denoiser")
    assert 0 < row["share"] < 1
    assert row["share"] == pytest.approx((row["core_s"] + row["proj_s"]) / kernel)
    # every attention node lies in a module the by-module table names after an attn1 module
    attn1 = sum(
        r["seconds"]
        for r in report["ops"]["by_module"]
        if r["component"] == "denoiser" and (".attn1" in r["module"] or "mid_block" in r["module"])
    )
    assert row["core_s"] + row["proj_s"] <= attn1 * 1.0001
    md = (profile_out / "report.md").read_text(encoding="utf-8")
    assert "Self-attention (`attn1` modules) in the denoiser" in md


def test_roofline_and_cold_start_are_plausible(report: dict[str, Any]) -> None:
    roof = report["roofline"]
    assert roof["flops_per_call"] > 1e8 and roof["unresolved_nodes"] == 0
    assert 0 < roof["ratio"] < 1.5
    cold = report["cold_start"]
    assert cold["import_s"] > 0 and cold["load_s"] > 0 and cold["first_run_s"] > 0
    assert report["memory"]["peak_rss_bytes"] > 50 * 2**20


def test_sweep_fits_a_growth_exponent(report: dict[str, Any]) -> None:
    sweep = report["sweep"]
    assert [p["resolution"] for p in sweep["points"]] == [128, 256]
    k = sweep["growth_exponent"]["denoiser"]
    assert k is not None and 0.2 < k < 3.0


def test_markdown_has_the_tables(profile_out: Path) -> None:
    md = (profile_out / "report.md").read_text(encoding="utf-8")
    for heading in (
        "## Latency",
        "## Cold start",
        "## Roofline",
        "### By source module",
        "### By op type",
        "## Against resolution",
    ):
        assert heading in md
