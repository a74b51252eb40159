"""Both ops through torch.onnx.export(dynamo=True): custom nodes, fallback, ONNX Runtime.

One small module with both ops is exported once with dynamic H and W; ONNX Runtime (CPU,
running the attached standard-op fallback functions) must match PyTorch at several sizes,
including odd ones and grids smaller than the attention window.
"""

import logging
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from difforge.errors import DifforgeError  # noqa: E402
from difforge.plugins.onnx_ops import (  # noqa: E402
    CUSTOM_TRANSLATION_TABLE,
    attach_fallback_functions,
    fallback_functions,
)

C, HEADS, T, P = 8, 2, 3, 2


class TwoOps(torch.nn.Module):
    """Depthwise convs feeding two local attentions (disc with text; square with pooled)."""

    def __init__(self) -> None:
        super().__init__()
        self.txt = torch.nn.Parameter(torch.randn(1, T, C))
        self.pooled = torch.nn.Parameter(torch.randn(1, P, C))
        self.qkv = torch.nn.Linear(C, 3 * C)
        self.w5 = torch.nn.Parameter(torch.randn(C, 1, 5, 5) / 5)
        self.b5 = torch.nn.Parameter(torch.randn(C))
        self.w3 = torch.nn.Parameter(torch.randn(C, 1, 3, 3) / 3)

    def _heads(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.qkv(tokens).unflatten(-1, (3, HEADS, -1)).permute(2, 0, 3, 1, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = x.shape
        y = torch.ops.difforge.depthwise_conv2d(x, self.w5, self.b5, 1, 2, 4)
        z = torch.ops.difforge.depthwise_conv2d(x, self.w3, None, 2, 1, 1)
        tokens = torch.cat([self.txt.expand(b, -1, -1), y.flatten(2).transpose(1, 2)], 1)
        q, k, v = self._heads(tokens)
        a = torch.ops.difforge.local_attention_2d(q, k, v, h, w, T, 3, "disc", 0.0, 0)
        _, kp, vp = self._heads(self.pooled.expand(b, -1, -1))
        k2, v2 = torch.cat([k, kp], 2), torch.cat([v, vp], 2)
        s = torch.ops.difforge.local_attention_2d(q, k2, v2, h, w, T, 2, "square", 0.5, P)
        return a + s, z


def _export(model: torch.nn.Module, args: tuple[torch.Tensor, ...], **kwargs: object) -> Any:
    """Export quietly (the exporter logs and warns a lot) and return the ModelProto."""
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                args,
                dynamo=True,
                custom_translation_table=CUSTOM_TRANSLATION_TABLE,
                verbose=False,
                **kwargs,  # type: ignore[arg-type]
            )
    finally:
        logging.disable(logging.NOTSET)
    assert program is not None
    return program.model_proto


@pytest.fixture(scope="module")
def exported() -> Iterator[tuple[TwoOps, "onnx.ModelProto"]]:
    torch.manual_seed(0)
    model = TwoOps().eval()
    dims = {2: torch.export.Dim("h", min=2, max=64), 3: torch.export.Dim("w", min=2, max=64)}
    proto = _export(model, (torch.randn(2, C, 6, 7),), dynamic_shapes=(dims,))
    yield model, attach_fallback_functions(proto)


def test_custom_nodes_and_attributes(exported: tuple[TwoOps, "onnx.ModelProto"]) -> None:
    _, proto = exported
    nodes = [n for n in proto.graph.node if n.domain == "difforge"]
    assert sorted(n.op_type for n in nodes) == ["DepthwiseConv2D"] * 2 + ["LocalAttention2D"] * 2
    for node in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["plugin_namespace"] == b"difforge" and attrs["plugin_version"] == b"1"
        if node.op_type == "LocalAttention2D":
            assert len(node.input) == 4  # q, k, v, hw
            assert attrs["height"] == -1 and attrs["width"] == -1  # dynamic in this export
            assert attrs["num_global"] == T and attrs["window"] in (b"disc", b"square")
    default = next(o.version for o in proto.opset_import if o.domain == "")
    assert {(f.domain, f.name) for f in proto.functions} == {
        ("difforge", "LocalAttention2D"),
        ("difforge", "DepthwiseConv2D"),
    }
    for function in proto.functions:
        assert [(o.domain, o.version) for o in function.opset_import] == [("", default)]
    onnx.checker.check_model(proto, full_check=True)


@pytest.mark.parametrize(("h", "w"), [(6, 7), (5, 3), (2, 2), (9, 4)])
def test_onnxruntime_matches_pytorch(
    exported: tuple[TwoOps, "onnx.ModelProto"], h: int, w: int
) -> None:
    model, proto = exported
    session = _session(proto)
    x = torch.randn(2, C, h, w)
    with torch.no_grad():
        expected = model(x)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    for out, ref in zip(got, expected, strict=True):
        assert out.shape == tuple(ref.shape)
        assert np.abs(out - ref.numpy()).max() <= 1e-4 * np.abs(ref.numpy()).max()


_SESSIONS: dict[int, "ort.InferenceSession"] = {}


def _session(proto: "onnx.ModelProto") -> "ort.InferenceSession":
    # One session per exported model (creating it is the slow part).
    if id(proto) not in _SESSIONS:
        _SESSIONS[id(proto)] = ort.InferenceSession(
            proto.SerializeToString(), providers=["CPUExecutionProvider"]
        )
    return _SESSIONS[id(proto)]


def test_fallback_needs_string_equal_opset() -> None:
    with pytest.raises(DifforgeError):
        fallback_functions(18, {"LocalAttention2D"})
    assert len(fallback_functions(18, {"DepthwiseConv2D"})) == 1


def test_static_export_keeps_sizes_as_attributes() -> None:
    class M(torch.nn.Module):
        def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return torch.ops.difforge.local_attention_2d(q, k, v, 3, 4, 2, 2, "disc", 0.0, 0)

    q, k, v = (torch.randn(1, 2, 14, 8) for _ in range(3))
    proto = attach_fallback_functions(_export(M(), (q, k, v)))
    node = next(n for n in proto.graph.node if n.op_type == "LocalAttention2D")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert (attrs["height"], attrs["width"]) == (3, 4)
    session = _session(proto)
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), (q, k, v), strict=True)}
    got = session.run(None, feeds)[0]
    assert np.abs(got - M()(q, k, v).numpy()).max() <= 1e-5
