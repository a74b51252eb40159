"""FP16 graphs with explicit casts, made by ONNX Runtime's float16 converter.

Inputs and outputs stay float32 (the runtime and every other component are unchanged); inside,
the converter writes float16 weights and activations and a Cast at each border with the ops
kept in fp32 (normalisation, softmax, reductions, the time and class embeddings). That is the
form TensorRT's strongly typed build takes, and ONNX Runtime's CPU provider runs it (inserting
its own casts where it has no fp16 kernel).
"""

from __future__ import annotations

from pathlib import Path

import onnx

from difforge.calib.groups import FP32_OPS

EXTERNAL_DATA_BYTES = 1 << 30


def convert_fp16(src: Path, dst: Path, keep_nodes: list[str]) -> None:
    """Write ``src`` in fp16 to ``dst``, leaving ``keep_nodes`` and :data:`FP32_OPS` in fp32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    converted = convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS)),
        node_block_list=keep_nodes,
    )
    dst.parent.mkdir(parents=True, exist_ok=True)
    large = converted.ByteSize() > EXTERNAL_DATA_BYTES
    onnx.save(
        converted,
        str(dst),
        save_as_external_data=large,
        location=dst.name + ".data" if large else None,
    )
