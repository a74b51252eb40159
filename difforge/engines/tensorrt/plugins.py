"""The shape and type half of difforge's TensorRT plugins, and the contract check that holds
each graph's custom-op nodes to them on a CPU.

A TensorRT plugin declares its outputs from its inputs (``tensorrt.plugin``'s ``register``
descriptor: shapes and dtypes) and computes them (``impl``/``aot_impl``). The declaring half is
plain code, so it lives here, where it can be checked without TensorRT: every
``difforge::`` node of a graph must name a plugin registered here (namespace and version as
the node's ``plugin_namespace``/``plugin_version`` attributes say), and that plugin's shape
rule must give the output shape the node really has, measured by running the graph on ONNX
Runtime (the node's standard-op body) at the component's min, opt and max shapes, and the
shape the op's ONNX schema infers from the same inputs. The computing half (the kernels as
TensorRT plugins) is not written yet, which is why ``--custom-ops plugin`` is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from difforge.artifact.feeds import sample_feeds
from difforge.artifact.manifest import ComponentEntry

Shape = tuple[int, ...]
Rule = Callable[[list[Shape], dict[str, Any]], list[Shape]]


@dataclass(frozen=True)
class PluginSpec:
    op: str
    namespace: str
    version: str
    #: output shapes from input shapes and the node's attributes
    shapes: Rule
    #: output dtype: the dtype of input ``like``
    like: int = 0


def _like_first(inputs: list[Shape], attrs: dict[str, Any]) -> list[Shape]:
    return [inputs[0]]


def _depthwise(inputs: list[Shape], attrs: dict[str, Any]) -> list[Shape]:
    (n, c, h, w), kernel = inputs[0], inputs[1][2:]
    stride, dilation, pads = attrs["strides"], attrs["dilations"], attrs["pads"]
    out = []
    for i, size in enumerate((h, w)):
        span = dilation[i] * (kernel[i] - 1) + 1
        out.append((size + pads[i] + pads[i + 2] - span) // stride[i] + 1)
    return [(n, c, *out)]


PLUGINS = {
    spec.op: spec
    for spec in (
        PluginSpec("difforge::LocalAttention2D", "difforge", "1", _like_first),
        PluginSpec("difforge::DepthwiseConv2D", "difforge", "1", _depthwise),
    )
}


def check_plugin_contract(graph: Path, entry: ComponentEntry) -> list[str]:
    """Why the graph's custom-op nodes break their plugins' contract (empty: they keep it)."""
    import onnx
    import onnxruntime as ort

    from difforge.plugins.onnx_ops import register_schemas

    register_schemas()
    model = onnx.load(str(graph))
    nodes = [n for n in model.graph.node if n.domain == "difforge"]
    problems: list[str] = []
    for node in nodes:
        op = f"{node.domain}::{node.op_type}"
        attrs = _attrs(node)
        spec = PLUGINS.get(op)
        wanted = (_text(attrs.get("plugin_namespace")), _text(attrs.get("plugin_version")))
        if spec is None:
            problems.append(f"{node.name or op}: no plugin is registered for {op}")
        elif wanted != (spec.namespace, spec.version):
            problems.append(f"{node.name or op}: the node asks for plugin {wanted[0]}/"
                            f"{wanted[1]}, the registered one is {spec.namespace}/{spec.version}")
    if problems or not nodes:
        return problems
    watched = [name for n in nodes for name in (*n.input, *n.output) if name]
    existing = {o.name for o in model.graph.output}
    model.graph.output.extend(
        onnx.ValueInfoProto(name=name) for name in dict.fromkeys(watched) if name not in existing
    )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    for which in ("min", "opt", "max"):
        values = dict(zip(names, session.run(names, sample_feeds(entry, which)), strict=True))
        for node in nodes:
            problems += _check_node(node, values, which)
    return problems


def _check_node(node: Any, values: dict[str, np.ndarray], which: str) -> list[str]:

    op = f"{node.domain}::{node.op_type}"
    attrs = _attrs(node)
    inputs = [tuple(values[name].shape) for name in node.input if name]
    real = [tuple(values[name].shape) for name in node.output]
    declared = PLUGINS[op].shapes(inputs, attrs)
    inferred = _inferred(node, [values[name] for name in node.input if name])
    where = f"{node.name or op} at the {which} shapes"
    out = []
    if declared != real:
        out.append(f"{where}: the plugin declares {declared}, the node makes {real}")
    if inferred is not None and inferred != real[0]:
        out.append(f"{where}: the ONNX schema infers {inferred}, the node makes {real[0]}")
    return out


def _inferred(node: Any, inputs: list[np.ndarray]) -> Shape | None:
    """The op schema's inferred output shape on a one-node graph with these concrete inputs
    (None where it leaves a dimension unknown)."""
    import onnx
    from onnx import helper, numpy_helper

    graph_inputs = [
        helper.make_tensor_value_info(name, numpy_helper.from_array(v).data_type, v.shape)
        for name, v in zip([n for n in node.input if n], inputs, strict=True)
    ]
    out = helper.make_tensor_value_info(node.output[0], onnx.TensorProto.UNDEFINED, None)
    graph = helper.make_graph([node], "one", graph_inputs, [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("difforge", 1),
                                                    helper.make_opsetid("", 20)])
    done = onnx.shape_inference.infer_shapes(model)
    info = next((v for v in done.graph.output if v.name == node.output[0]), None)
    if info is None or not info.type.tensor_type.HasField("shape"):
        return None
    dims = info.type.tensor_type.shape.dim
    if not all(d.HasField("dim_value") for d in dims):
        return None
    return tuple(d.dim_value for d in dims)


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
