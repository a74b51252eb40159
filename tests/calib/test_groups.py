"""Which nodes INT8 and FP16 lower, on small ONNX graphs written as text, each exclusion with
its reason."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser

from difforge.calib.groups import FP16_RULES, INT8_RULES, group_of, plan_nodes

GRAPH = """
<ir_version: 9, opset_import: ["" : 20]>
g (float[1, 4, 8, 8] x, float[1, 16, 8] ctx) => (float[1, 4, 8, 8] y, float[1, 16, 16] p) {
    h = Conv <pads: ints = [1, 1, 1, 1]> (x, w_in)
    q = MatMul (ctx, w_q)
    kt = Transpose <perm: ints = [0, 2, 1]> (q)
    s = MatMul (q, kt)
    p = Softmax <axis: int = -1> (s)
    n = InstanceNormalization (h, sc, bi)
    r = Conv <pads: ints = [1, 1, 1, 1]> (n, w_res)
    y = Conv <pads: ints = [1, 1, 1, 1]> (r, w_out)
}
"""
#: the weights the text names, added as initializers
WEIGHTS = {"w_in": [4, 4, 3, 3], "w_q": [8, 8], "w_res": [4, 4, 3, 3], "w_out": [4, 4, 3, 3]}
SCOPES = {
    0: "unet.conv_in",
    1: "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
    3: "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1",
    4: "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1",
    5: "unet.down_blocks.0.resnets.0.norm1",
    6: "unet.down_blocks.1.resnets.0.time_emb_proj",  # a Conv here, a Linear in real U-Nets
    7: "unet.conv_out",
}


def _model() -> onnx.ModelProto:
    model = onnx.parser.parse_model(GRAPH)
    for name, shape in {**WEIGHTS, "sc": [4], "bi": [4]}.items():
        size = int(np.prod(shape))
        tensor = onnx.helper.make_tensor(name, onnx.TensorProto.FLOAT, shape, [0.5] * size)
        model.graph.initializer.append(tensor)
    onnx.checker.check_model(model)
    for i, node in enumerate(model.graph.node):
        node.name = f"n{i}"
        path = SCOPES.get(i)
        if path is not None:
            entry = node.metadata_props.add()
            entry.key = "pkg.torch.onnx.name_scopes"
            entry.value = repr(["", *path.split(".")[:1], path, f"op{i}"])
    return model


def test_int8_lowers_weight_bearing_ops_and_says_why_others_stay() -> None:
    plan = plan_nodes(_model(), INT8_RULES)
    assert plan.nodes() == ["n1"]  # the attention projection
    assert plan.excluded == {
        "n0": "first or last layer",
        "n3": "activation by activation (attention scores, linear-attention normaliser)",
        "n6": "time or class embedding",
        "n7": "first or last layer",
    }
    assert list(plan.groups) == ["unet.down_blocks.0"]


def test_fp16_keeps_normalisation_softmax_and_embeddings_in_fp32() -> None:
    plan = plan_nodes(_model(), FP16_RULES)
    kept = {n: r for n, r in plan.excluded.items()}
    assert kept["n4"].startswith("kept in fp32") and kept["n5"].startswith("kept in fp32")
    assert kept["n6"] == "time or class embedding"
    assert {"n0", "n1", "n2", "n3", "n7"} <= set(plan.nodes())


def test_groups_cut_after_the_first_numbered_block() -> None:
    assert group_of("unet.down_blocks.1.resnets.0.conv1") == "unet.down_blocks.1"
    assert group_of("text_model.encoder.layers.3.self_attn.q_proj") == (
        "text_model.encoder.layers.3"
    )
    assert group_of("unet.mid_block") == "unet.mid_block"
    assert group_of(None) == "(unattributed)"
