"""The pass contract: an onnx-ir in-place pass with a registered name that reports what it did.

A pass says truthfully whether it changed the model (``PassResult.modified``, from a
structural fingerprint taken before and after) and what it did (``details``: fusion counts,
functions inlined); the builder records :meth:`GraphPass.record` of each pass that ran, so
the manifest's pass list is read from the pass objects themselves.
"""

from __future__ import annotations

import collections
import copy
from collections.abc import Iterable
from typing import Any, ClassVar

import onnx_ir as ir
import onnx_ir.passes

from difforge.artifact.manifest import PassRecord


def fingerprint(model: ir.Model) -> tuple[Any, ...]:
    """The graph's inputs, outputs and initializers, and the op counts of the graph and of
    every model-local function: cheap, and changed by every rewrite a pass here makes."""

    def ops(nodes: Any) -> tuple[tuple[str, int], ...]:
        return tuple(sorted(collections.Counter(f"{n.domain}::{n.op_type}" for n in nodes).items()))

    graph = model.graph
    return (
        tuple(v.name for v in graph.inputs),
        tuple(v.name for v in graph.outputs),
        tuple(sorted(graph.initializers)),
        ops(graph.all_nodes()),
        tuple(sorted((str(key), ops(f.all_nodes())) for key, f in model.functions.items())),
    )


class GraphPass(onnx_ir.passes.InPlacePass):
    """Subclasses set ``name`` and write :meth:`run`, returning their details."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__()
        self.details: dict[str, Any] = {}
        self.modified = False

    def call(self, model: ir.Model) -> onnx_ir.passes.PassResult:
        before = fingerprint(model)
        self.details = self.run(model)
        self.modified = fingerprint(model) != before
        return onnx_ir.passes.PassResult(model, modified=self.modified)

    def run(self, model: ir.Model) -> dict[str, Any]:
        """Rewrite ``model`` in place; return what was done (JSON-friendly)."""
        raise NotImplementedError

    def record(self) -> PassRecord:
        return PassRecord(self.name, self.modified, copy.deepcopy(self.details))


def domains(keep: str | Iterable[str]) -> tuple[str, ...]:
    """``keep`` as a tuple of domains (one domain may be given as a plain string)."""
    return (keep,) if isinstance(keep, str) else tuple(keep)


def keep_domains_criteria(keep: tuple[str, ...]) -> Any:
    """onnx-ir's inlining criteria: inline every function outside the ``keep`` domains."""
    return lambda function: function.domain not in keep
