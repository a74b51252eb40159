"""Check an exported graph against its PyTorch module on ONNX Runtime, at the profile shapes.

Running at min, opt and max (different batch and spatial sizes from the export trace) is
what catches a shape-specialised trace: a Python branch baked into the graph either fails
to run at another shape or gives a different answer there.

The max check runs every axis at its top except the batch, which stays at its min when the
graph has spatial axes: the largest spatial size is what catches a specialised trace, and it
is also what costs memory (a U-Net's attention grows with the square of its tokens, and the
batch multiplies that), so the batch's range is left to the min and opt checks. ONNX
Runtime's arena is off here: each shape's activations are given back before the next, as
PyTorch's are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from difforge.errors import DifforgeError
from difforge.exporter.components import Component
from difforge.exporter.specs import ComponentSpec
from difforge.metrics import compare


def verify_component(
    component: Component, path: Path, shapes: tuple[str, ...] = ("min", "opt", "max")
) -> list[dict[str, Any]]:
    """Run ``path`` on ONNX Runtime CPU and ``component.module`` in PyTorch; raise on a mismatch."""
    import onnxruntime as ort

    spec = component.spec
    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # failures are reported by the exception
    opts.enable_cpu_mem_arena = False
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    results: list[dict[str, Any]] = []
    for which in shapes:
        sizes = verification_sizes(spec, which)
        feeds = spec.sample_inputs(sizes, seed=1)
        try:
            with torch.no_grad():
                ref = component.module(*(feeds[t.name] for t in spec.inputs))
        except (MemoryError, RuntimeError) as exc:
            if not _out_of_memory(exc):
                raise
            raise _oom(spec.role, which, sizes, "PyTorch") from exc
        refs = ref if isinstance(ref, tuple) else (ref,)
        try:
            got = session.run(None, {k: v.numpy() for k, v in feeds.items()})
        except Exception as exc:  # onnxruntime's errors are untyped
            if _out_of_memory(exc):
                raise _oom(spec.role, which, sizes, "ONNX Runtime") from exc
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DifforgeError(
                f"export check failed: {spec.role} does not run at its {which} shape {sizes} "
                f"(the trace was specialised to one shape?): {msg}"
            ) from exc
        for tensor, r, g in zip(spec.outputs, refs, got, strict=True):
            errors = compare(r.detach().numpy(), g)
            entry = {"shape": which, "sizes": sizes, "output": tensor.name, **errors}
            results.append(entry)
            if not errors["max_rel"] <= spec.tolerance:
                raise DifforgeError(
                    f"export check failed: {spec.role}.{tensor.name} at {which} shape {sizes} "
                    f"differs from PyTorch by {errors['max_rel']:.2e} relative "
                    f"(tolerance {spec.tolerance:.0e}; max abs {errors['max_abs']:.2e})"
                )
    return results


def verification_sizes(spec: ComponentSpec, which: str) -> dict[str, int]:
    """The axis sizes of the ``which`` check: the profile's, with the batch at its min for
    the max check of a graph with spatial axes (one with a batch axis alone, a text encoder,
    is checked at its largest batch)."""
    sizes = spec.profile(which)
    spatial = any(a.min < a.max for name, a in spec.axes.items() if name != "batch")
    if which == "max" and "batch" in spec.axes and spatial:
        sizes["batch"] = spec.axes["batch"].min
    return sizes


def _out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or any(
        sign in text for sign in ("out of memory", "not enough memory", "failed to allocate",
                                  "bad_alloc", "bad allocation")
    )


def _oom(role: str, which: str, sizes: dict[str, int], where: str) -> DifforgeError:
    return DifforgeError(
        f"verifying {role} at its {which} shape {sizes} ran out of memory in {where}; build a "
        "smaller range (--resolution MIN:MAX, --max-batch N) or verify on a larger machine"
    )
