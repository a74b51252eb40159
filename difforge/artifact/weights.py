"""Store the weights of several graph variants once.

Step-dependent patches export one graph per variant (re-dilated and plain U-Net, say); their
weights are the same tensors. Every initializer of at least ``min_bytes`` moves into one
external data file beside the graphs, each distinct tensor written once, and every graph
points at it: N variants cost one set of weights on disk and in the artifact.

Export writes the shared file and engines that rewrite graphs one by one write it again; the
runtime never calls this, so ``onnx`` (a compile-time package) is imported only here.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from difforge.artifact.manifest import CUSTOM_OP_DOMAIN


def share_weights(
    graphs: list[Path], data_name: str = "weights.data", min_bytes: int = 1024
) -> dict[str, int]:
    """Rewrite ``graphs`` (all in one folder) to share ``data_name``; returns byte counts."""
    import onnx
    from onnx import numpy_helper

    folder = graphs[0].parent
    if any(g.parent != folder for g in graphs):
        raise ValueError("variant graphs must share one folder")
    data_path = folder / data_name
    # Written beside the old file and renamed at the end: the graphs being rewritten may still
    # read their weights from the old one.
    staging = folder / (data_name + ".partial")
    offsets: dict[tuple[int, tuple[int, ...], str], tuple[int, int]] = {}
    total_refs = 0
    rewritten: list[tuple[Path, Any]] = []
    with staging.open("wb") as data:
        for graph in graphs:
            model = onnx.load(str(graph), load_external_data=True)
            for tensor in model.graph.initializer:
                raw = numpy_helper.to_array(tensor).tobytes()
                if len(raw) < min_bytes:
                    continue
                total_refs += len(raw)
                key = (tensor.data_type, tuple(tensor.dims), hashlib.sha256(raw).hexdigest())
                if key not in offsets:
                    # 4 KiB alignment lets runtimes memory-map each tensor.
                    pad = (-data.tell()) % 4096
                    data.write(b"\0" * pad)
                    offsets[key] = (data.tell(), len(raw))
                    data.write(raw)
                offset, length = offsets[key]
                dims, dtype, name = list(tensor.dims), tensor.data_type, tensor.name
                tensor.Clear()
                tensor.name, tensor.data_type = name, dtype
                tensor.dims.extend(dims)
                for key_name, value in (("location", data_name), ("offset", str(offset)),
                                        ("length", str(length))):
                    entry = tensor.external_data.add()
                    entry.key, entry.value = key_name, value
                tensor.data_location = onnx.TensorProto.EXTERNAL
            rewritten.append((graph, model))
    os.replace(staging, data_path)
    for graph, model in rewritten:
        tmp = graph.with_suffix(".tmp")
        onnx.save(model, str(tmp))
        os.replace(tmp, graph)
    return {"stored_bytes": data_path.stat().st_size, "referenced_bytes": total_refs}


def graph_files(graph: Path, root: Path) -> list[str]:
    """The files an ONNX graph reads, relative to ``root``: itself and its external data."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    folder = graph.parent
    data = {
        entry.value
        for tensor in model.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    rel = [(folder / name).relative_to(root).as_posix() for name in sorted(data)]
    return [graph.relative_to(root).as_posix(), *rel]


def graph_bytes(graph: Path) -> int:
    """Bytes of an ONNX graph with its external data: what a tool that loads it and saves it
    again must write (a single protobuf holds at most 2 GiB)."""
    return sum((graph.parent / name).stat().st_size for name in graph_files(graph, graph.parent))


def custom_ops_in(graph: Path) -> list[str]:
    """The difforge custom ops whose nodes an ONNX graph holds (``difforge::Name``)."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    ops = {n.op_type for n in model.graph.node if n.domain == CUSTOM_OP_DOMAIN}
    return [f"{CUSTOM_OP_DOMAIN}::{op}" for op in sorted(ops)]
