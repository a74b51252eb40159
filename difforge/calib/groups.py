"""Which nodes a lower precision touches, why the others are left alone, and the layer groups
that sensitivity and failed gates name.

Each rule is a small check that returns the reason a node stays in fp32, or ``None``; the
first reason wins and is reported. INT8 quantizes weight-bearing ops only (Conv, MatMul, Gemm
with a constant weight): attention scores, the linear-attention normaliser and every other
activation-by-activation product stay in fp32, as do softmax and normalisation (they bear no
weights) and difforge's custom ops (their bodies are functions the quantizer does not enter).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import onnx

from difforge.artifact.manifest import CUSTOM_OP_DOMAIN
from difforge.artifact.scopes import module_path

WEIGHT_OPS = ("Conv", "MatMul", "Gemm")
#: ops FP16 keeps in fp32 (normalisation, softmax, reductions and what overflows in fp16)
FP32_OPS = (
    "GroupNormalization",
    "LayerNormalization",
    "InstanceNormalization",
    "SimplifiedLayerNormalization",
    "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "Softmax",
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL2",
    "ReduceMax",
    "Pow",
    "Sqrt",
    "Exp",
    "Erf",
    "Sin",
    "Cos",
    "Range",
)
_EMBEDDING = re.compile(
    r"(^|\.)(time_embedding|time_proj|time_emb_proj|class_embedding|add_embedding|"
    r"timestep_embedder|t_embedder|y_embedder|class_embedder|time_text_embed|"
    r"guidance_embedder|label_emb)(\.|$)"
)
#: the model's first and last layers: directly under the root module
_ENDS = re.compile(r"^[^.]+\.(conv_in|conv_out|proj_out(_\d+)?|x_embedder|pos_embed)(\.|$)")

Rule = Callable[[onnx.NodeProto, str | None, set[str]], str | None]


def _weight_op(node: onnx.NodeProto, path: str | None, consts: set[str]) -> str | None:
    if node.domain == CUSTOM_OP_DOMAIN:
        return "difforge custom op"
    if node.op_type not in WEIGHT_OPS:
        return "bears no weights"
    if len(node.input) < 2 or node.input[1] not in consts:
        return "activation by activation (attention scores, linear-attention normaliser)"
    return None


def _embedding(node: onnx.NodeProto, path: str | None, consts: set[str]) -> str | None:
    return "time or class embedding" if path and _EMBEDDING.search(path) else None


def _ends(node: onnx.NodeProto, path: str | None, consts: set[str]) -> str | None:
    return "first or last layer" if path and _ENDS.match(path) else None


INT8_RULES: tuple[Rule, ...] = (_weight_op, _embedding, _ends)


def _fp32_op(node: onnx.NodeProto, path: str | None, consts: set[str]) -> str | None:
    if node.domain == CUSTOM_OP_DOMAIN:
        return "difforge custom op"
    return "kept in fp32 (normalisation, softmax, reduction)" if node.op_type in FP32_OPS else None


FP16_RULES: tuple[Rule, ...] = (_fp32_op, _embedding)


def group_of(path: str | None) -> str:
    """A layer group: the module path cut after its first numbered block
    (``unet.down_blocks.1``, ``text_model.encoder.layers.3``), else its first two names."""
    if not path:
        return "(unattributed)"
    parts = path.split(".")
    for i in range(1, len(parts)):
        if parts[i].isdigit():
            return ".".join(parts[: i + 1])
    return ".".join(parts[:2])


@dataclass
class NodePlan:
    """The nodes a precision lowers, by layer group, and why each other one is left alone."""

    groups: dict[str, list[str]] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)

    def nodes(self, skip: tuple[str, ...] = ()) -> list[str]:
        """The nodes to lower, less the groups in ``skip``."""
        return [n for g, names in self.groups.items() if g not in skip for n in names]

    def reasons(self) -> dict[str, int]:
        """How many nodes each reason kept out."""
        out: dict[str, int] = {}
        for reason in self.excluded.values():
            out[reason] = out.get(reason, 0) + 1
        return dict(sorted(out.items()))


def plan_nodes(model: onnx.ModelProto, rules: tuple[Rule, ...]) -> NodePlan:
    """Every named node of ``model``'s main graph, through ``rules``."""
    consts = {init.name for init in model.graph.initializer}
    consts |= {n.output[0] for n in model.graph.node if n.op_type == "Constant" and n.output}
    plan = NodePlan()
    for node in model.graph.node:
        if not node.name:
            continue
        path = module_path({p.key: p.value for p in node.metadata_props})
        reason = next((r for rule in rules if (r := rule(node, path, consts)) is not None), None)
        if reason is None:
            plan.groups.setdefault(group_of(path), []).append(node.name)
        elif node.op_type in WEIGHT_OPS or rules is FP16_RULES:
            plan.excluded[node.name] = reason
    return plan
