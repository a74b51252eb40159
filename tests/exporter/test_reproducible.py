"""The same model exports to the same bytes, whatever Python's hash seed."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from difforge.exporter.onnx_export import RANGES, stable_metadata

SCRIPT = """
import sys, torch
from pathlib import Path
from difforge.exporter.components import Component
from difforge.exporter.onnx_export import export_component
from difforge.exporter.specs import Axis, ComponentSpec, Tensor

class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.b = torch.nn.Linear(8, 4)
    def forward(self, x, t, c):
        return self.a(x) * t[:, None, None, None] + self.b(c).mean(1)[:, :, None, None]

torch.manual_seed(0)
axes = {"batch": Axis(1, 2, 4), "h": Axis(8, 16, 32, multiple=8),
        "w": Axis(8, 24, 32, multiple=8), "tokens": Axis(2, 4, 8)}
spec = ComponentSpec(
    role="toy",
    inputs=(Tensor("x", "float32", ("batch", 4, "h", "w")), Tensor("t", "float32", ("batch",)),
            Tensor("c", "float32", ("batch", "tokens", 8))),
    outputs=(Tensor("y", "float32", ("batch", 4, "h", "w")),),
    axes=axes,
)
export_component(Component(spec, M()), Path(sys.argv[1]))
"""


def test_exports_are_identical_across_hash_seeds(tmp_path: Path) -> None:
    digests = []
    for seed in ("1", "2", "3"):
        out = tmp_path / f"m{seed}.onnx"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", SCRIPT, str(out)], env=env, check=True,
                       capture_output=True, timeout=300)
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(set(digests)) == 1, digests


def test_symbol_ranges_are_written_sorted() -> None:
    def program(order: list[str]) -> SimpleNamespace:
        ranges = {name: f"VR[1, {i}]" for i, name in enumerate(sorted(order))}
        ranges = {name: ranges[name] for name in order}  # insertion order as given
        model = SimpleNamespace(graph=SimpleNamespace(metadata_props={RANGES: str(ranges)}))
        return SimpleNamespace(model=model, exported_program=SimpleNamespace(
            range_constraints=ranges))

    a, b = program(["s9", "2*s3", "s3"]), program(["s3", "s9", "2*s3"])
    stable_metadata(a)
    stable_metadata(b)
    assert a.model.graph.metadata_props[RANGES] == b.model.graph.metadata_props[RANGES]
    assert a.model.graph.metadata_props[RANGES] == "{2*s3: VR[1, 0], s3: VR[1, 1], s9: VR[1, 2]}"
