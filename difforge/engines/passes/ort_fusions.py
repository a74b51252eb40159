"""Fuse attention and normalisation into ONNX Runtime's CPU contrib ops.

ONNX Runtime's own transformer optimizer finds nothing to fuse in a dynamo-exported graph and
its U-Net options emit CUDA-only ops; onnxscript's ``optimize_for_ort`` matches the dynamo
patterns and emits ``com.microsoft`` ops the CPU provider runs (MultiHeadAttention,
SkipLayerNormalization, ...). One of its rule sets turns InstanceNorm-based group norms into
``com.microsoft.GroupNorm``, which only the CUDA provider implements (it fires on graphs with
a static batch); this pass leaves those rules out. The builder checks the result numerically.
"""

from __future__ import annotations

from unittest import mock

import onnx_ir as ir
import onnx_ir.passes


def _cpu_rules() -> list[object]:
    from onnxscript.rewriter.ort_fusions import ORT_PATTERN_REWRITE_RULES
    from onnxscript.rewriter.ort_fusions import instance_to_group_normalization as gn

    cuda_only = set(map(id, gn.rules.rules))
    return [r for r in ORT_PATTERN_REWRITE_RULES if id(r) not in cuda_only]


class OrtTransformerFusions(onnx_ir.passes.InPlacePass):
    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def call(self, model: ir.Model) -> onnx_ir.passes.PassResult:
        from onnxscript.rewriter.ort_fusions import _core, optimize_for_ort

        with mock.patch.object(_core, "ORT_PATTERN_REWRITE_RULES", _cpu_rules()):
            _, counts = optimize_for_ort(model)
        self.counts = {k: int(v) for k, v in counts.items() if v}
        return onnx_ir.passes.PassResult(model, modified=bool(self.counts))
