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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from difforge.errors import DifforgeError
from difforge.exporter.components import Component
from difforge.exporter.specs import ComponentSpec
from difforge.metrics import compare


@dataclass
class Reference:
    """PyTorch's outputs for one check: which shape, its sizes, the feeds (as numpy)."""

    which: str
    sizes: dict[str, int]
    feeds: dict[str, np.ndarray]
    outputs: list[np.ndarray]


def verify_component(
    component: Component, path: Path, shapes: tuple[str, ...] = ("min", "opt", "max")
) -> list[dict[str, Any]]:
    """Run ``path`` on ONNX Runtime CPU and ``component.module`` in PyTorch; raise on a mismatch."""
    return check_outputs(component.spec, path, reference_outputs(component, shapes))


def reference_outputs(
    component: Component, shapes: tuple[str, ...] = ("min", "opt", "max")
) -> list[Reference]:
    """PyTorch's outputs at each check's shape, computed before ONNX Runtime loads the graph,
    so that the module's weights can be released first (:func:`release_weights`)."""
    spec = component.spec
    refs = []
    for which in shapes:
        sizes = verification_sizes(spec, which)
        feeds = spec.sample_inputs(sizes, seed=1)
        try:
            with torch.no_grad():
                out = component.module(*(feeds[t.name] for t in spec.inputs))
        except (MemoryError, RuntimeError) as exc:
            if not _out_of_memory(exc):
                raise
            raise _oom(spec.role, which, sizes, "PyTorch") from exc
        outs = out if isinstance(out, tuple) else (out,)
        numpy_feeds = {k: v.numpy() for k, v in feeds.items()}
        refs.append(Reference(which, sizes, numpy_feeds, [o.detach().numpy() for o in outs]))
    return refs


def check_outputs(spec: ComponentSpec, path: Path, refs: list[Reference]) -> list[dict[str, Any]]:
    """Run ``path`` on ONNX Runtime CPU at each reference's shape; raise on a mismatch."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # failures are reported by the exception
    opts.enable_cpu_mem_arena = False
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    results: list[dict[str, Any]] = []
    for ref in refs:
        which, sizes = ref.which, ref.sizes
        try:
            got = session.run(None, ref.feeds)
        except Exception as exc:  # onnxruntime's errors are untyped
            if _out_of_memory(exc):
                raise _oom(spec.role, which, sizes, "ONNX Runtime") from exc
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DifforgeError(
                f"export check failed: {spec.role} does not run at its {which} shape {sizes} "
                f"(the trace was specialised to one shape?): {msg}"
            ) from exc
        for tensor, r, g in zip(spec.outputs, ref.outputs, got, strict=True):
            errors = compare(r, g)
            entry = {"shape": which, "sizes": sizes, "output": tensor.name, **errors}
            results.append(entry)
            if not errors["max_rel"] <= spec.tolerance:
                raise DifforgeError(
                    f"export check failed: {spec.role}.{tensor.name} at {which} shape {sizes} "
                    f"differs from PyTorch by {errors['max_rel']:.2e} relative "
                    f"(tolerance {spec.tolerance:.0e}; max abs {errors['max_abs']:.2e})"
                )
    return results


def release_weights(module: torch.nn.Module) -> None:
    """Free a module's weights once its graph is written and its references computed: its
    parameters and buffers move to the meta device (shapes kept, no memory), so that ONNX
    Runtime's copy and the next component's export do not sit beside them. The collection
    frees what only reference cycles still hold (the exporter's program keeps the weights)."""
    import gc

    module.to("meta")
    gc.collect()


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
