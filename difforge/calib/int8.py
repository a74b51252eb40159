"""INT8 Q/DQ graphs with ONNX Runtime's static quantizer, scales from recorded trajectories.

The QDQ format (QuantizeLinear/DequantizeLinear pairs around each quantized op's inputs) is the
one graph every engine reads: ONNX Runtime fuses the pairs into integer kernels, OpenVINO into
its low-precision kernels, TensorRT builds it explicitly. Both activations and weights are
symmetric int8 (zero points 0), weights per output channel, as TensorRT's explicit
quantization requires. Calibration methods are ONNX Runtime's own (MinMax, Percentile, Entropy).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from difforge.artifact.weights import graph_bytes
from difforge.calib.precision import CALIB_METHODS
from difforge.errors import DifforgeError

#: per-channel axis of each op's weight: Conv [out, in, kh, kw] -> 0; MatMul [in, out] -> 1;
#: Gemm with transB=1 [out, in] -> 0 (difforge's exports write Linear as Gemm(transB=1))
WEIGHT_AXES = {"Conv": 0, "MatMul": 1, "Gemm": 0}
PERCENTILE = 99.999
ENTROPY_BINS = 2048
#: records whose activations the calibrator holds at once
CHUNK = 8
#: graphs above this size (weights included) are written with external data by ONNX
#: Runtime's tools: the calibrator's augmented copy and the quantized graph
EXTERNAL_DATA_BYTES = 1 << 30


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over recorded feeds."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]) -> None:
        self._iter: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self._iter


def check_method(method: str) -> None:
    if method not in CALIB_METHODS:
        raise DifforgeError(f"--calib-method takes {', '.join(CALIB_METHODS)}, got {method!r}")


def calibrate_ranges(
    src: Path, feeds: Iterable[dict[str, np.ndarray]], method: str, ranges: Path
) -> None:
    """Run ONNX Runtime's calibrator for ``method`` over ``feeds``; save the activation
    ranges to ``ranges`` (its cache format, which :func:`quantize_int8` reads).

    Called here rather than inside ``quantize_static`` because that passes no histogram size
    to the entropy calibrator, whose default (128 bins for 128 quantized bins) leaves it one
    candidate threshold: the min-max range. TensorRT's entropy calibration uses 2048 bins.
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    check_method(method)
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    options: dict[str, object] = {"symmetric": True}
    if method == "entropy":
        options.update(num_bins=ENTROPY_BINS, num_quantized_bins=128)
    if method == "percentile":
        options.update(percentile=PERCENTILE, num_bins=ENTROPY_BINS)
    with tempfile.TemporaryDirectory(prefix="difforge-calib-") as tmp, _quiet():
        calibrator = create_calibrator(
            src,
            list(WEIGHT_AXES),
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=methods[method],
            use_external_data_format=graph_bytes(src) > EXTERNAL_DATA_BYTES,
            extra_options=options,
        )
        # a chunk at a time: each call folds its records into the ranges (or histograms) and
        # drops them, so memory holds CHUNK records' activations, not the whole set's (one
        # record's at real size, where they run to gigabytes)
        size = CHUNK if graph_bytes(src) <= EXTERNAL_DATA_BYTES else 1
        chunk: list[dict[str, np.ndarray]] = []
        for record in feeds:
            chunk.append(record)
            if len(chunk) == size:
                calibrator.collect_data(_Reader(chunk))
                chunk = []
        if chunk:
            calibrator.collect_data(_Reader(chunk))
        save_tensors_data(calibrator.compute_data(), ranges)
        del calibrator


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The quantizer logs advice through the root logger and prints progress on every call;
    difforge reports for itself."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def quantize_int8(src: Path, dst: Path, nodes: list[str], method: str, ranges: Path) -> None:
    """Write ``src`` with ``nodes`` quantized to int8 (QDQ) to ``dst``, with the activation
    ranges :func:`calibrate_ranges` saved (so lowering different node subsets of one graph
    calibrates once)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not nodes:
        raise DifforgeError(f"{src.parent.name}: nothing to quantize to int8")
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    extra = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QDQOpTypePerChannelSupportToAxis": dict(WEIGHT_AXES),
        # biases stay float: TensorRT takes no int32 Q/DQ (ONNX Runtime runs both as fast)
        "QuantizeBias": False,
    }
    dst.parent.mkdir(parents=True, exist_ok=True)
    with _quiet():
        quantize_static(
            str(src),
            str(dst),
            None,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_quantize=nodes,
            calibrate_method=methods[method],
            extra_options=extra,
            use_external_data_format=graph_bytes(src) > EXTERNAL_DATA_BYTES,
            calibration_cache_path=str(ranges),
        )
