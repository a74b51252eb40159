"""difforge.plugins: custom ops (local 2-D attention, depthwise conv), their Triton kernels
and their ONNX side (schemas, translations, standard-op fallback functions).

This module imports nothing heavy: torch, triton and onnx load only when a name below is
first used, so ``import difforge.plugins`` works on a torch-free runtime.

* ``load_ops()``: register ``torch.ops.difforge.local_attention_2d`` / ``depthwise_conv2d``.
* ``local_attention_2d``, ``depthwise_conv2d``: the registered ops (from :mod:`.ops`).
* ``CUSTOM_TRANSLATION_TABLE``, ``attach_fallback_functions``, ``onnx_export_kwargs``: ONNX
  export helpers (from :mod:`.onnx_ops`; need onnx + onnxscript).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "local_attention_2d": "difforge.plugins.ops",
    "depthwise_conv2d": "difforge.plugins.ops",
    "CUSTOM_TRANSLATION_TABLE": "difforge.plugins.onnx_ops",
    "attach_fallback_functions": "difforge.plugins.onnx_ops",
    "onnx_export_kwargs": "difforge.plugins.onnx_ops",
}


def load_ops() -> None:
    """Register the ``torch.ops.difforge`` custom ops (imports torch)."""
    importlib.import_module("difforge.plugins.ops")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'difforge.plugins' has no attribute {name!r}")


__all__ = ["load_ops", *_LAZY]
