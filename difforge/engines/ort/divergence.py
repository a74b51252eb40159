"""Where two graphs of one component start to disagree: the first differing intermediate tensor.

When a graph pass changes what a component computes, the builder's output check can only say
*that* the outputs differ. Polygraphy marks every intermediate tensor of both graphs as an
output (``polygraphy run --onnx-outputs mark all``), runs each on ONNX Runtime, and the tensors
the two graphs share are compared in the order the original graph computes them: the first one
out of tolerance points at the rewrite that broke it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from difforge.metrics import compare


@dataclass(frozen=True)
class Divergence:
    tensor: str
    max_rel: float
    #: the op type and name of the node that produces ``tensor`` in each graph
    producer_before: tuple[str, str]
    producer_after: tuple[str, str]

    def describe(self) -> str:
        op, name = self.producer_after
        return (
            f"first differing tensor {self.tensor!r} ({self.max_rel:.2e} relative), produced by "
            f"{op} node {name!r} in the optimised graph"
        )


def _producers(path: Path) -> tuple[list[str], dict[str, tuple[str, str]]]:
    """Tensor names in the order the graph computes them, and each one's producing node."""
    model = onnx.load(str(path), load_external_data=False)
    order: list[str] = []
    producers: dict[str, tuple[str, str]] = {}
    for node in model.graph.node:
        for out in node.output:
            if out:
                order.append(out)
                producers[out] = (node.op_type, node.name)
    return order, producers


def _run_marking_all(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from polygraphy import constants
    from polygraphy.backend.onnx import BytesFromOnnx, ModifyOutputs, OnnxFromPath
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.comparator import Comparator
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.ERROR
    marked = ModifyOutputs(OnnxFromPath(str(path)), outputs=constants.MARK_ALL)
    session = SessionFromOnnx(BytesFromOnnx(marked), providers=["CPUExecutionProvider"])
    results = Comparator.run([OnnxrtRunner(session, name=path.name)], data_loader=[feeds])
    ((_, iterations),) = results.items()
    return dict(iterations[0])


def first_divergence(
    before: Path, after: Path, feeds: dict[str, np.ndarray], tolerance: float
) -> Divergence | None:
    """The first tensor both graphs compute whose values differ by more than ``tolerance``
    (relative to the reference's largest magnitude); None if every shared tensor agrees."""
    order, produced_before = _producers(before)
    _, produced_after = _producers(after)
    ref = _run_marking_all(before, feeds)
    got = _run_marking_all(after, feeds)
    for name in order:
        if name not in produced_after or name not in ref or name not in got:
            continue
        a, b = np.asarray(ref[name]), np.asarray(got[name])
        if a.dtype.kind != "f" or a.shape != b.shape or a.size == 0:
            continue
        max_rel = compare(a, b)["max_rel"]
        if not max_rel <= tolerance:
            return Divergence(name, max_rel, produced_before[name], produced_after[name])
    return None
