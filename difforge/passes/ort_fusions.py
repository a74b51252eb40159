"""Fuse attention, normalisation and GELU into ONNX Runtime's CPU contrib ops.

ONNX Runtime's own transformer optimizer finds nothing to fuse in a dynamo-exported graph and
its U-Net options emit CUDA-only ops; onnxscript's ORT fusions match the dynamo patterns and
emit ``com.microsoft`` ops the CPU provider runs (MultiHeadAttention, SkipLayerNormalization,
...). This pass runs onnxscript's ``optimize_for_ort`` sequence from its public pieces (each
fusion function, the public rule lists, ``rewrite``), for two reasons: one of its rule sets
turns InstanceNorm-based group norms into ``com.microsoft.GroupNorm``, which only the CUDA
provider implements (it fires on graphs with a static batch), so it is left out here; and its
clean-ups inline every model-local function, which would also inline custom-op bodies an
engine keeps as plugin nodes, so here the clean-ups inline all but the ``keep`` domains.
The builder checks the result numerically.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import onnx_ir as ir
import onnx_ir.passes.common as common

from difforge.passes import register_pass
from difforge.passes.base import GraphPass, domains, keep_domains_criteria


def _fusions() -> list[tuple[str, Callable[..., int]]]:
    """onnxscript's transformer fusions, in the order its ``fuse_xformers`` applies them."""
    from onnxscript.rewriter.ort_fusions import (
        attention,
        bias_gelu,
        cos_sin_cache,
        erfgelu,
        gelu,
        gqa,
        gqa_packed_qkv,
        mha,
        mha_bias,
        mha_scale,
        rms_normalization,
        rotary_embedding,
        sdpa,
        sdpa_via_mha,
        skip_normalization,
    )

    return [
        ("erf_gelu", erfgelu.fuse_erfgelu),
        ("rms_normalization", rms_normalization.fuse_rms_normalization),
        ("skip_layer_normalization", skip_normalization.fuse_skip_layer_normalization),
        ("skip_rms_normalization", skip_normalization.fuse_skip_rms_normalization),
        ("rotary_embedding", rotary_embedding.fuse_rotary_embedding),
        ("cos_sin_cache", cos_sin_cache.fuse_cos_sin_cache),
        ("cse", lambda model, debug=False: common.CommonSubexpressionEliminationPass()(model)),
        ("partial_rotary_embedding", rotary_embedding.fuse_partial_rotary_embedding),
        ("sdpa", lambda model, debug=False: sdpa.fuse_sdpa(model, apply_shape_inference=True)),
        ("gqa", gqa.fuse_gqa),
        ("packed_qkv_for_gqa", gqa_packed_qkv.fuse_qkv_gqa),
        ("mha1", mha.fuse_mha1),
        ("mha2", mha.fuse_mha2),
        ("mha_scale", mha_scale.fuse_mha_scale),
        ("mha_bias", mha_bias.fuse_mha_bias),
        ("attention", attention.fuse_attention),
        ("gelu", gelu.fuse_gelu),
        ("bias_gelu", bias_gelu.fuse_bias_gelu),
        ("sdpa_via_mha", sdpa_via_mha.replace_sdpa_by_mha),
    ]


def cpu_rewrite_rules() -> list[Any]:
    """onnxscript's ORT pattern rules without the group-norm set (CUDA-only GroupNorm)."""
    from onnxscript.rewriter.ort_fusions import (
        ORT_PATTERN_REWRITE_RULES,
        instance_to_group_normalization,
    )

    cuda_only = set(map(id, instance_to_group_normalization.rules.rules))
    return [r for r in ORT_PATTERN_REWRITE_RULES if id(r) not in cuda_only]


@register_pass
class OrtFusions(GraphPass):
    name = "ort_fusions"
    summary = "attention / layer-norm / GELU fusion into ONNX Runtime CPU contrib ops"

    def __init__(self, keep: str | Iterable[str] = ()) -> None:
        super().__init__()
        self.keep = domains(keep)

    def _optimize(self, model: ir.Model) -> None:
        import onnxscript.optimizer

        common.InlinePass(keep_domains_criteria(self.keep))(model)
        onnxscript.optimizer.optimize(model, inline=False)

    def run(self, model: ir.Model) -> dict[str, Any]:
        from onnxscript.rewriter import rewrite
        from onnxscript.rewriter.ort_fusions import shape_optimization
        from onnxscript.rewriter.rules.common import gemm_to_matmul_add_rule

        rewrite(model, [gemm_to_matmul_add_rule])
        common.ShapeInferencePass()(model)
        self._optimize(model)
        shape_optimization.rules.apply_to_model(model)
        self._optimize(model)
        counts: dict[str, int] = {}
        for name, fuse in _fusions():
            if name in ("mha_bias", "attention") and not (counts["mha1"] or counts["mha2"]):
                continue  # as onnxscript does: both build on a fused MultiHeadAttention
            done = fuse(model, debug=False)
            if name != "cse":
                counts[name] = int(done)
        self._optimize(model)
        rewrite(model, cpu_rewrite_rules())
        ir.passes.Sequential(
            common.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1),
            common.RemoveInitializersFromInputsPass(),
            common.ShapeInferencePass(),
        )(model)
        return {"fusions": {k: v for k, v in counts.items() if v}}
