"""The machine's measured fp32 matrix-multiply peak, through ONNX Runtime's own MatMul (MLAS).

Measuring with the library that runs the model keeps the roofline honest: the ratio says how
much of what this CPU and these kernels *can* do the denoiser actually gets.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np


def _matmul_model(n: int) -> bytes:
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])
    c = helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm", [a, b], [c])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def matmul_peak(threads: int, n: int = 2048, repeats: int = 7) -> dict[str, Any]:
    """Best-of-``repeats`` fp32 GFLOP/s of an n×n×n MatMul with ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(_matmul_model(n), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {
        "a": rng.standard_normal((n, n), dtype=np.float32),
        "b": rng.standard_normal((n, n), dtype=np.float32),
    }
    sess.run(None, feeds)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        best = min(best, time.perf_counter() - t0)
    flops = 2.0 * n**3
    return {
        "method": f"onnxruntime MatMul {n}x{n}x{n} fp32, best of {repeats}",
        "threads": threads,
        "seconds": best,
        "gflops": flops / best / 1e9,
    }
