"""INT8 calibration methods on a small graph: entropy and percentile clip a heavy tail that
min-max keeps, the same data gives byte-identical graphs, and each method's ranges are reused
for every node subset."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import pytest

from difforge.calib.int8 import calibrate_ranges, quantize_int8
from difforge.calib.trt_rules import check_qdq
from difforge.errors import DifforgeError

GRAPH = """
<ir_version: 9, opset_import: ["" : 20]>
g (float[16, 64] x) => (float[16, 8] y) {
    h = MatMul (x, w1)
    y = MatMul (h, w2)
}
"""


def _graph(tmp: Path) -> Path:
    model = onnx.parser.parse_model(GRAPH)
    rng = np.random.default_rng(0)
    for name, shape in {"w1": (64, 16), "w2": (16, 8)}.items():
        model.graph.initializer.append(
            onnx.numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
        )
    model.graph.node[0].name, model.graph.node[1].name = "mm1", "mm2"
    path = tmp / "g.onnx"
    onnx.save(model, str(path))
    return path


def _feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    # 160 records of 16 x 64: the 99.999th percentile leaves out the top 1.6 values
    feeds = [{"x": rng.laplace(size=(16, 64)).astype(np.float32)} for _ in range(160)]
    feeds[7]["x"][0, 0] = 80.0  # one outlier
    return feeds


def _x_scale(path: Path) -> float:
    model = onnx.load(str(path))
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x")
    init = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    return float(init[q.input[1]])


@pytest.fixture(scope="module")
def scales(tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    tmp = tmp_path_factory.mktemp("int8")
    src = _graph(tmp)
    out = {}
    for method in ("minmax", "percentile", "entropy"):
        ranges = tmp / f"{method}.json"
        calibrate_ranges(src, _feeds(), method, ranges)
        quantize_int8(src, tmp / f"{method}.onnx", ["mm1", "mm2"], method, ranges)
        assert check_qdq(onnx.load(str(tmp / f"{method}.onnx"))) == []
        out[method] = _x_scale(tmp / f"{method}.onnx")
    return out


def test_min_max_keeps_the_outlier(scales: dict[str, float]) -> None:
    assert scales["minmax"] == pytest.approx(80.0 / 127, rel=1e-6)


def test_entropy_and_percentile_clip_it(scales: dict[str, float]) -> None:
    # ONNX Runtime's entropy calibrator at its defaults (128 bins for 128 levels) has one
    # candidate threshold, the min-max range; difforge gives it TensorRT's 2048 bins
    assert scales["entropy"] < 0.5 * scales["minmax"]
    assert scales["percentile"] < 0.5 * scales["minmax"]


def test_same_ranges_same_bytes_and_subsets_reuse_them(tmp_path: Path) -> None:
    src = _graph(tmp_path)
    ranges = tmp_path / "r.json"
    calibrate_ranges(src, _feeds(), "minmax", ranges)
    digests = set()
    for i in range(2):
        quantize_int8(src, tmp_path / f"q{i}.onnx", ["mm1", "mm2"], "minmax", ranges)
        digests.add(hashlib.sha256((tmp_path / f"q{i}.onnx").read_bytes()).hexdigest())
    assert len(digests) == 1
    again = tmp_path / "again.json"
    calibrate_ranges(src, _feeds(), "minmax", again)
    assert again.read_bytes() == ranges.read_bytes()
    quantize_int8(src, tmp_path / "one.onnx", ["mm2"], "minmax", ranges)
    nodes = onnx.load(str(tmp_path / "one.onnx")).graph.node
    quantized = {n.input[0] for n in nodes if n.op_type == "QuantizeLinear"}
    assert "h" in quantized and "x" not in quantized  # mm2's input, not mm1's


def test_nothing_to_quantize_and_unknown_methods_are_refused(tmp_path: Path) -> None:
    src = _graph(tmp_path)
    with pytest.raises(DifforgeError, match="--calib-method takes minmax, percentile, entropy"):
        calibrate_ranges(src, _feeds(), "kl", tmp_path / "r.json")
    with pytest.raises(DifforgeError, match="nothing to quantize to int8"):
        quantize_int8(src, tmp_path / "q.onnx", [], "minmax", tmp_path / "r.json")
    assert not (tmp_path / "q.onnx").exists()


def test_a_graph_whose_weights_are_external_is_sized_with_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real-size graph keeps its weights beside it (the .onnx file alone is small): the
    calibrator's augmented copy and the quantized graph must then be written with external
    data too, or protobuf's 2 GiB limit fails the save."""
    import difforge.calib.int8 as int8
    from difforge.artifact.weights import graph_bytes, graph_files
    from difforge.calib.gates import onnx_run

    model = onnx.load(str(_graph(tmp_path)))
    src = tmp_path / "ext" / "g.onnx"
    src.parent.mkdir()
    onnx.save(model, str(src), save_as_external_data=True, location="g.data", size_threshold=0)
    weights = (64 * 16 + 16 * 8) * 4
    assert src.stat().st_size < weights <= graph_bytes(src)
    monkeypatch.setattr(int8, "EXTERNAL_DATA_BYTES", weights // 2)  # "above 1 GiB"
    ranges = tmp_path / "r.json"
    calibrate_ranges(src, _feeds(), "minmax", ranges)
    out = tmp_path / "q" / "model.onnx"
    quantize_int8(src, out, ["mm1", "mm2"], "minmax", ranges)
    assert len(graph_files(out, out.parent)) == 2  # the graph and its data file
    inline = tmp_path / "inline.onnx"  # the same quantization of the same graph, one file
    monkeypatch.setattr(int8, "EXTERNAL_DATA_BYTES", 1 << 30)
    quantize_int8(_graph(tmp_path), inline, ["mm1", "mm2"], "minmax", ranges)
    assert graph_files(inline, inline.parent) == ["inline.onnx"]
    feeds = _feeds()[0]
    assert np.array_equal(onnx_run(str(out))(feeds)["y"], onnx_run(str(inline))(feeds)["y"])
