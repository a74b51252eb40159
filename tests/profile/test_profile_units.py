"""Small pure pieces: statistics, module labels, FLOP counting, the perf.md block."""

from __future__ import annotations

from pathlib import Path

import pytest

from difforge.cli._common import parse_ints
from difforge.errors import DifforgeError
from difforge.profile.bench.perfdoc import BEGIN, END, replace_block, update_perf_doc
from difforge.profile.modules import label, module_path, unit_path
from difforge.profile.stats import growth_exponent, summarize


def test_summary_and_growth_exponent() -> None:
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert s["min"] == 1.0 and s["p50"] == 2.5 and s["n"] == 4
    assert growth_exponent([1, 2, 4], [3.0, 12.0, 48.0]) == pytest.approx(2.0)
    assert growth_exponent([2, 2], [1.0, 2.0]) is None


def test_module_paths_and_labels() -> None:
    meta = {
        "pkg.torch.onnx.name_scopes": "['', 'unet', 'unet.up_blocks.1', "
        "'unet.up_blocks.1.attentions.0', "
        "'unet.up_blocks.1.attentions.0.transformer_blocks.0', "
        "'unet.up_blocks.1.attentions.0.transformer_blocks.0.attn1', "
        "'unet.up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q', 'linear_3']"
    }
    path = module_path(meta)
    assert path == "unet.up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    unit = unit_path(path)
    assert unit == "unet.up_blocks.1.attentions.0.transformer_blocks.0.attn1"
    assert label(unit) == "attn1 in up_blocks.1 (attentions.0.transformer_blocks.0)"
    resnet = unit_path("unet.down_blocks.0.resnets.0.conv1")
    assert label(resnet) == "resnets.0 in down_blocks.0"
    assert module_path({}) is None


def test_flops_of_a_conv_and_a_matmul(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from difforge.profile.flops import count_flops

    w = numpy_helper.from_array(np.zeros((8, 4, 3, 3), np.float32), "w")
    m = numpy_helper.from_array(np.zeros((10, 6), np.float32), "m")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
            helper.make_node("MatMul", ["y", "m"], ["z"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4, "h", 10])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        [w, m],
    )
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    counted = count_flops(path, {"x": [2, 4, 5, 10]})
    assert counted.by_op["Conv"] == 2 * (2 * 8 * 5 * 10) * (4 * 3 * 3)
    assert counted.by_op["MatMul"] == 2 * (2 * 8 * 5 * 6) * 10
    assert counted.unresolved == 0


def test_flops_of_a_graph_whose_shape_constants_are_external(tmp_path: Path) -> None:
    """Large components keep every initializer in external data, the shape constants that
    symbolic shape inference must read included; counted from another working directory."""
    import os

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from difforge.profile.flops import count_flops

    w = numpy_helper.from_array(np.zeros((8, 4, 3, 3), np.float32), "w")
    shape = numpy_helper.from_array(np.array([0, 8, -1], np.int64), "shape")
    m = numpy_helper.from_array(np.zeros((50, 6), np.float32), "m")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
            helper.make_node("Reshape", ["y", "shape"], ["r"]),
            helper.make_node("MatMul", ["r", "m"], ["z"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4, "h", 10])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        [w, shape, m],
    )
    folder = tmp_path / "component"
    folder.mkdir()
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, folder / "model.onnx", save_as_external_data=True,
              location="model.onnx.data", size_threshold=0)
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        counted = count_flops(folder / "model.onnx", {"x": [2, 4, 5, 10]})
    finally:
        os.chdir(here)
    assert counted.by_op["MatMul"] == 2 * (2 * 8 * 6) * 50
    assert counted.unresolved == 0


def test_perf_doc_block_is_rewritten_in_place(tmp_path: Path) -> None:
    doc = tmp_path / "perf.md"
    doc.write_text(f"# Perf\n\nmachine notes\n\n{BEGIN}\nold\n{END}\n\ntail\n", encoding="utf-8")
    update_perf_doc(doc, "new table")
    text = doc.read_text(encoding="utf-8")
    assert "old" not in text and "new table" in text
    assert text.startswith("# Perf\n\nmachine notes") and text.endswith("tail\n")
    assert replace_block("x\n", "t").endswith(f"{BEGIN}\nt\n{END}\n")
    with pytest.raises(DifforgeError):
        replace_block(f"{END}\n{BEGIN}", "t")
    # a named block beside the default one: each rewritten alone
    update_perf_doc(doc, "sd15 table", "bench-sd15")
    update_perf_doc(doc, "newer table")
    text = doc.read_text(encoding="utf-8")
    assert "<!-- bench-sd15:begin -->\nsd15 table\n<!-- bench-sd15:end -->" in text
    assert f"{BEGIN}\nnewer table\n{END}" in text and "new table\n" not in text


def test_bad_sweep_is_a_user_error() -> None:
    assert parse_ints("256, 512", "--sweep") == [256, 512]
    with pytest.raises(DifforgeError, match="--sweep"):
        parse_ints("256,abc", "--sweep")
    with pytest.raises(DifforgeError, match="positive"):
        parse_ints("0", "--sweep")


def test_openvino_counters_become_traces_grouped_by_kernel() -> None:
    from types import SimpleNamespace

    from difforge.profile.ops import LAYOUT, group
    from difforge.profile.traces import READERS, merge
    from difforge.runtime.runners.openvino import ProfiledCall

    calls = [
        ProfiledCall(
            0.010,
            [
                ("node_conv/WithoutBiases", "Convolution", "brgconv_avx2_I8", 0.006),
                ("x_abcd_acdb_node_conv", "Reorder", "jit_uni_f32", 0.001),
            ],
        ),
        ProfiledCall(0.004, [("node_conv/WithoutBiases", "Convolution", "jit_avx2_f32", 0.003)]),
    ]
    runner = SimpleNamespace(profiling=True, calls=calls)
    runs = READERS["openvino"][0]("denoiser", runner)
    assert runs is not None and [r.run_s for r in runs] == [0.010, 0.004]
    both = merge("denoiser", runs)
    assert both.run_s == pytest.approx(0.014) and len(both.kernels) == 3
    ops = group([both], {"denoiser": {"node_conv": "unet.conv_in"}})
    # one node run by two kernels (another shape, another choice) is counted under each
    kernels = {r["name"]: r["seconds"] for r in ops["by_kernel"]}
    assert kernels == pytest.approx(
        {
            "Convolution [brgconv_avx2_I8]": 0.006,
            "Convolution [jit_avx2_f32]": 0.003,
            "Reorder [jit_uni_f32]": 0.001,
        }
    )
    modules = {r["module"]: r["seconds"] for r in ops["by_module"]}
    assert modules == pytest.approx({"unet.conv_in": 0.009, LAYOUT: 0.001})
    assert READERS["openvino"][0]("denoiser", SimpleNamespace(profiling=False, calls=[])) is None


def test_goal_line_counts_only_rows_of_known_quality() -> None:
    from difforge.profile.bench.table import goal

    def row(name: str, p50: float, gated: bool = True) -> dict[str, object]:
        return {"name": name, "stats": {"p50": p50}, "gated": gated}

    rows = [row("OpenVINO default", 1.0), row("difforge fp32 (ORT)", 0.9)]
    assert "difforge fp32 (ORT) is 1.11×" in goal(rows) and "missed" in goal(rows)
    fast = row("difforge int8 (OpenVINO)", 0.5, gated=False)  # built with --no-gate
    assert "difforge fp32 (ORT) is 1.11×" in goal([*rows, fast])
    assert "difforge int8 (OpenVINO) is 2.00×" in goal([*rows, {**fast, "gated": True}])
    assert "met" in goal([*rows, {**fast, "gated": True}])
