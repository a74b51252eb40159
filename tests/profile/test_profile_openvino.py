"""``difforge profile`` on an OpenVINO artifact: OpenVINO's per-node counters grouped like ONNX
Runtime's trace, the kernel that ran each node, modules from the table the build stored in
the IR, and no roofline (FLOPs are counted on ONNX graphs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest

from difforge.profile.render_md import render
from difforge.profile.report import schema

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ov_report(tiny_sd_openvino: Path) -> dict[str, Any]:
    from difforge.profile.profiler import ProfileConfig, profile

    return profile(
        ProfileConfig(artifact=tiny_sd_openvino, runs=1, warmup=0, steps=2, resolution=128)
    )


def test_the_report_validates(ov_report: dict[str, Any]) -> None:
    jsonschema.validate(ov_report, schema())
    assert ov_report["artifact"]["backend"] == "openvino"
    assert ov_report["roofline"] is None


def test_every_executed_node_is_grouped(ov_report: dict[str, Any]) -> None:
    ops = ov_report["ops"]
    for key in ("by_op_type", "by_module", "by_kernel"):
        assert sum(r["seconds"] for r in ops[key]) == pytest.approx(ops["kernel_s"]), key
    assert ops["kernel_s"] > 0
    assert {r["component"] for r in ops["by_op_type"]} >= {"denoiser", "vae_decoder"}


def test_kernels_name_the_implementation_that_ran(ov_report: dict[str, Any]) -> None:
    rows = ov_report["ops"]["by_kernel"]
    assert all(r["name"].endswith("]") and " [" in r["name"] for r in rows)
    convs = [r["name"] for r in rows if r["name"].startswith("Convolution [")]
    assert convs and all("f32" in n.lower() for n in convs), convs  # an fp32 build


def test_time_is_placed_in_modules_and_attention(ov_report: dict[str, Any]) -> None:
    ops = ov_report["ops"]
    assert ops["module_coverage"] >= 0.7
    names = {r["name"] for r in ops["by_module"] if r["component"] == "denoiser"}
    assert any(n.startswith("attn1 in ") for n in names), names
    (row,) = ops["attention"]
    assert row["component"] == "denoiser" and row["core_s"] > 0


def test_markdown_says_what_it_could_not_measure(ov_report: dict[str, Any]) -> None:
    md = render(ov_report)
    assert "### By kernel (what ran)" in md
    assert "OpenVINO per-node counters" in md
    assert "Not measured: FLOPs are counted on ONNX graphs" in md
