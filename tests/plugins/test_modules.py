"""The module patches swap in: same numbers as the conv it replaces, exported as the op."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from difforge.plugins.modules import DepthwiseConv2d


@pytest.mark.parametrize(("k", "stride", "dilation"), [(13, 1, 1), (3, 2, 1), (5, 1, 2)])
def test_depthwise_module_equals_conv(k: int, stride: int, dilation: int) -> None:
    conv = torch.nn.Conv2d(6, 6, k, stride=stride, dilation=dilation,
                           padding=dilation * (k // 2), groups=6, bias=True)
    module = DepthwiseConv2d.from_conv(conv)
    x = torch.randn(2, 6, 11, 9)
    torch.testing.assert_close(module(x), conv(x), rtol=1e-5, atol=1e-6)
    assert set(module.state_dict()) == set(conv.state_dict())


def test_rejects_a_dense_conv() -> None:
    with pytest.raises(ValueError, match="not a square depthwise conv"):
        DepthwiseConv2d.from_conv(torch.nn.Conv2d(4, 8, 3, padding=1))


def test_exports_as_the_difforge_node(tmp_path: Path) -> None:
    from difforge.exporter.components import Component
    from difforge.exporter.onnx_export import export_component
    from difforge.exporter.specs import Axis, ComponentSpec, Tensor

    module = DepthwiseConv2d.from_conv(torch.nn.Conv2d(4, 4, 7, padding=3, groups=4))
    spec = ComponentSpec(
        role="dw",
        inputs=(Tensor("x", "float32", ("batch", 4, "h", "w")),),
        outputs=(Tensor("y", "float32", ("batch", 4, "h", "w")),),
        axes={"batch": Axis(1, 1, 2), "h": Axis(8, 12, 16), "w": Axis(8, 12, 16)},
    )
    path = export_component(Component(spec, module), tmp_path / "dw.onnx")
    model = onnx.load(str(path))
    assert any(n.domain == "difforge" and n.op_type == "DepthwiseConv2D" for n in model.graph.node)
    x = torch.randn(2, 4, 13, 9)
    got = ort.InferenceSession(str(path)).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, module(x).detach().numpy(), rtol=1e-5, atol=1e-5)
