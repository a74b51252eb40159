"""A tiny builder for ONNX ``FunctionProto`` bodies (one output per node)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from onnx import AttributeProto, FunctionProto, NodeProto, helper

INT64_MAX = (1 << 63) - 1
# AttributeProto type ids, for attribute references.
ATTR_INT = AttributeProto.INT
ATTR_FLOAT = AttributeProto.FLOAT
ATTR_STRING = AttributeProto.STRING
ATTR_INTS = AttributeProto.INTS


class FunctionBuilder:
    """Appends nodes and hands back the name of each node's output."""

    def __init__(self, prefix: str) -> None:
        self.nodes: list[NodeProto] = []
        self._prefix = prefix
        self._count = 0

    def _fresh(self) -> str:
        self._count += 1
        return f"{self._prefix}_{self._count}"

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        out = self._fresh()
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def op_to(self, output: str, op_type: str, *inputs: str, **attrs: Any) -> str:
        """Like :meth:`op` but writes a named output (the function's result)."""
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], **attrs))
        return output

    def op_ref(
        self, op_type: str, inputs: Sequence[str], refs: Mapping[str, tuple[str, int]]
    ) -> str:
        """A node whose attributes refer to the function's own attributes.

        ``refs`` maps the node's attribute name to (function attribute, AttributeProto type).
        """
        out = self._fresh()
        node = helper.make_node(op_type, list(inputs), [out])
        for name, (ref, kind) in refs.items():
            node.attribute.append(
                helper.make_attribute_ref(name, kind, ref_attr_name=ref)  # type: ignore[arg-type]
            )
        self.nodes.append(node)
        return out

    def ints(self, *values: int) -> str:
        """A constant 1-D int64 tensor."""
        return self.op("Constant", value_ints=list(values))

    def int_(self, value: int) -> str:
        """A constant int64 scalar."""
        return self.op("Constant", value_int=value)

    def float_(self, value: float) -> str:
        """A constant float32 scalar."""
        return self.op("Constant", value_float=value)

    def vec(self, scalar: str) -> str:
        """A scalar as a 1-element 1-D tensor (what Slice and Concat want)."""
        return self.op("Reshape", scalar, self.ints(1))

    def slice(self, data: str, start: str, end: str, axis: int) -> str:
        """``data[start:end]`` along ``axis`` with scalar bounds."""
        return self.op("Slice", data, self.vec(start), self.vec(end), self.ints(axis))

    def function(
        self,
        domain: str,
        name: str,
        inputs: Sequence[str],
        outputs: Sequence[str],
        attributes: Sequence[str],
        opset: int,
        doc: str,
    ) -> FunctionProto:
        return helper.make_function(
            domain,
            name,
            list(inputs),
            list(outputs),
            self.nodes,
            [helper.make_opsetid("", opset)],
            attributes=list(attributes),
            doc_string=doc,
        )
