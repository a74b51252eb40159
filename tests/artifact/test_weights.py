"""Step variants' graphs store their weights once (one shared external data file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from difforge.artifact.weights import custom_ops_in, graph_files, share_weights
from difforge.exporter.components import Component
from difforge.exporter.onnx_export import export_component
from difforge.exporter.specs import Axis, ComponentSpec, Tensor


class Dilated(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.dilation = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.dilation  # read at trace time: one clean graph per variant
        return torch.nn.functional.conv2d(x, self.conv.weight, self.conv.bias, padding=d,
                                          dilation=d)


def test_variants_share_one_weight_file(tmp_path: Path) -> None:
    module = Dilated()
    spec = ComponentSpec(
        role="toy",
        inputs=(Tensor("x", "float32", ("batch", 8, "h", "w")),),
        outputs=(Tensor("y", "float32", ("batch", 8, "h", "w")),),
        axes={"batch": Axis(1, 1, 2), "h": Axis(8, 12, 16), "w": Axis(8, 12, 16)},
    )
    paths = []
    for d in (1, 2):
        module.dilation = d
        paths.append(export_component(Component(spec, module), tmp_path / f"model@{d}.onnx"))
    sizes = share_weights(paths, min_bytes=256)
    assert sizes["referenced_bytes"] == 2 * module.conv.weight.numel() * 4
    assert sizes["stored_bytes"] < 1.5 * module.conv.weight.numel() * 4
    x = torch.randn(2, 8, 13, 11)
    for d, path in zip((1, 2), paths, strict=True):
        module.dilation = d
        got = ort.InferenceSession(str(path)).run(None, {"x": x.numpy()})[0]
        np.testing.assert_allclose(got, module(x).detach().numpy(), rtol=1e-5, atol=1e-5)
        assert path.stat().st_size < 4096  # the graph itself holds no weights
    assert graph_files(paths[0], tmp_path) == [paths[0].name, "weights.data"]
    assert custom_ops_in(paths[0]) == []
