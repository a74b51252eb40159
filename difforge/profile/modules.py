"""Map graph nodes back to the PyTorch module that produced them.

The dynamo exporter records, on each node, ``pkg.torch.onnx.name_scopes`` (the module path
from the root, then the FX node name) and ``pkg.torch.onnx.class_hierarchy`` (one class per
module level). onnxscript's rewriter and the builder's passes keep the metadata of the nodes
they copy; fused nodes get the metadata of the pattern's first node or none.
"""

from __future__ import annotations

import re
from pathlib import Path

from difforge.artifact.scopes import module_path

#: Module names at which time is aggregated: finer paths (to_q, net.0.proj) fold into these.
_UNIT = re.compile(
    r"^(attn\d*|ff|resnets\.\d+|downsamplers\.\d+|upsamplers\.\d+|proj_in|proj_out|norm\d*|"
    r"time_embedding|time_proj|conv_in|conv_out|conv_norm_out|conv_act|mid_block|"
    r"self_attn|mlp|layer_norm\d*|embeddings|final_layer_norm|post_quant_conv|up_blocks\.\d+)$"
)


def unit_path(path: str) -> str:
    """``path`` cut after its first aggregation unit below the top-level block."""
    parts = path.split(".")
    # find the first unit name (a single or dotted 'name.N' component) after the root module
    for i in range(1, len(parts)):
        single = parts[i]
        pair = ".".join(parts[i : i + 2])
        if _UNIT.match(pair) and not pair.startswith("up_blocks"):
            return ".".join(parts[: i + 2])
        if _UNIT.match(single):
            return ".".join(parts[: i + 1])
    return path


def label(path: str) -> str:
    """A readable name: ``unet.up_blocks.1.attentions.0.transformer_blocks.0.attn1`` ->
    ``attn1 in up_blocks.1 (attentions.0.transformer_blocks.0)``."""
    parts = path.split(".")
    if len(parts) <= 1:
        return path or "(top level)"
    body = parts[1:]  # drop the root module attribute (unet, vae, model)
    if len(body) >= 2 and body[1].isdigit():
        block, rest = ".".join(body[:2]), body[2:]
    else:
        block, rest = body[0], body[1:]
    if not rest:
        return block
    leaf = rest[-1]
    if leaf.isdigit() and len(rest) >= 2:
        leaf = ".".join(rest[-2:])
        middle = rest[:-2]
    else:
        middle = rest[:-1]
    text = f"{leaf} in {block}"
    return f"{text} ({'.'.join(middle)})" if middle else text


def node_modules(path: Path, aggregate: bool = True) -> dict[str, str]:
    """Node name (and output name) -> aggregated module path (:func:`unit_path`), or with
    ``aggregate=False`` the deepest module path (``...attn1.to_q``, ``...attn1.processor``).

    ONNX Runtime names the nodes it re-lays-out after their output (``conv2d_27_nchwc``), so
    output names are keys too. Nodes without metadata (made by fusions) take the module of
    the first consumer, else producer, that has one.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    nodes = list(model.graph.node)
    found: dict[str, str] = {}
    for node in nodes:
        path_ = module_path({p.key: p.value for p in node.metadata_props})
        if path_ is not None:
            found[node.name] = unit_path(path_) if aggregate else path_
    producer = {out: n for n in nodes for out in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in nodes:
        if node.name in found:
            continue
        near = [c for out in node.output for c in consumers.get(out, [])]
        near += [producer[i] for i in node.input if i in producer]
        for other in near:
            if other.name in found:
                found[node.name] = found[other.name]
                break
    out = dict(found)
    for node in nodes:
        if node.name in found:
            for name in node.output:
                out.setdefault(name, found[node.name])
    return out
