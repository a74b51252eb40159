"""Time an engine's per-node profile attributes to a model's self-attention modules.

A profiled node belongs to a self-attention module when the exporter's metadata (see
:mod:`difforge.profile.modules`) places it in a module named ``attn1`` (diffusers' name for
self-attention in U-Net and DiT blocks). Inside that module it is

* the attention *core* when its deepest module is the ``attn1`` module itself or its
  ``processor``: full attention's ``MultiHeadAttention``/``Attention`` contrib ops,
  LinFusion's elu/matmul/normalisation nodes, CLEAR's inlined local-attention nodes;
* a *projection* when it lies in a child module: ``to_q``/``to_k``/``to_v``/``to_out`` and
  LinFusion's ``to_q_``/``to_k_`` MLPs.

Nodes ONNX Runtime's profile names but the graph's metadata cannot place (its own session
fusions, layout conversions) are counted as *unmapped*; they are in neither part.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from difforge.errors import DifforgeError
from difforge.profile.modules import node_modules
from difforge.profile.ops import Trace, resolve_module
from difforge.profile.traces import profiled

#: diffusers' attribute name of a transformer block's self-attention module
SELF_ATTENTION = "attn1"
#: module names, below the attention module, that hold the attention computation itself
_CORE_CHILDREN = ("processor",)


@dataclass
class AttentionTime:
    """Seconds of one profiled run (or window of runs) of one component."""

    #: the attention computation of every self-attention module
    core: float = 0.0
    #: their q/k/v/out projections (and any other child module)
    proj: float = 0.0
    #: every kernel of the run
    kernel: float = 0.0
    #: the session run time the profile records (kernels plus scheduling gaps)
    run: float = 0.0
    #: kernel seconds of nodes no module could be found for, and by op type
    unmapped_s: float = 0.0
    unmapped_ops: dict[str, float] = field(default_factory=dict)

    @property
    def unmapped(self) -> float:
        """Share of the kernel time that could not be placed in a module."""
        return self.unmapped_s / self.kernel if self.kernel else 0.0

    def as_dict(self) -> dict[str, float]:
        """``core``/``proj``/``kernel``/``run`` in seconds, ``unmapped`` as a fraction."""
        return {
            "core": self.core,
            "proj": self.proj,
            "kernel": self.kernel,
            "run": self.run,
            "unmapped": self.unmapped,
        }


def attention_part(module: str | None, name: str = SELF_ATTENTION) -> str | None:
    """``"core"`` or ``"proj"`` for a module path inside a module called ``name``, else None.

    The innermost ``name`` module counts (a path such as ``...attn1.to_q`` is a projection,
    ``...attn1`` and ``...attn1.processor`` are the core).
    """
    if not module:
        return None
    parts = module.split(".")
    if name not in parts[1:]:  # parts[0] is the wrapper's root attribute (unet, transformer)
        return None
    last = len(parts) - 1 - parts[::-1].index(name)
    inner = parts[last + 1 :]
    return "core" if not inner or (len(inner) == 1 and inner[0] in _CORE_CHILDREN) else "proj"


def split_trace(
    trace: Trace, modules: Mapping[str, str], name: str = SELF_ATTENTION
) -> AttentionTime:
    """The kernel time of ``trace`` in ``name`` modules' core and projections.

    ``modules`` maps graph node names to their deepest module path, as
    ``node_modules(graph, aggregate=False)`` returns it.
    """
    table = dict(modules)
    out = AttentionTime(run=trace.run_s)
    for node, op, seconds in trace.kernels:
        out.kernel += seconds
        module = resolve_module(node, table)
        if module is None:
            out.unmapped_s += seconds
            out.unmapped_ops[op] = out.unmapped_ops.get(op, 0.0) + seconds
            continue
        part = attention_part(module, name)
        if part == "core":
            out.core += seconds
        elif part == "proj":
            out.proj += seconds
    return out


def attention_modules(graph: Path) -> dict[str, str]:
    """Node name -> deepest module path, for :func:`split_trace`."""
    return node_modules(graph, aggregate=False)


def profile_attention(
    artifact: Path,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    component: str = "denoiser",
    runs: int = 3,
    warmup: int = 1,
    threads: int | None = None,
    name: str = SELF_ATTENTION,
) -> list[list[AttentionTime]]:
    """Per feed dict, the attention time of each of ``runs`` calls of ``component``, after
    ``warmup`` calls that are left out; all in one session, made by the runtime's runner with
    the engine's profiler on (ONNX Runtime's trace, OpenVINO's per-node counters).

    ``component`` is a manifest key: ``denoiser``, or a variant graph such as
    ``denoiser@redilated``. Every feed dict must fit the sizes the artifact was built for.
    """
    from difforge.runtime import load

    if runs < 1 or warmup < 0:
        raise DifforgeError(f"runs must be at least 1 and warmup 0 or more ({runs}, {warmup})")
    with tempfile.TemporaryDirectory(prefix="difforge-attention-") as tmp:
        pipeline = load(
            artifact,
            threads=threads,
            lazy=True,
            session_overrides={"profile_prefix": str(Path(tmp) / "ort")},
        )
        if component not in pipeline.runners:
            known = ", ".join(sorted(pipeline.runners))
            raise DifforgeError(f"{artifact} has no component {component!r} (has {known})")
        if not feeds:
            return []
        runner = pipeline.runners[component]
        for feed in feeds:
            for _ in range(warmup + runs):
                runner.infer(dict(feed))
        graph = pipeline.root / pipeline.manifest.components[component].file
        found = profiled(component, runner, graph)
        if found is None:
            raise DifforgeError(f"the {runner.backend} engine does not support per-op profiling")
        traces, tables = found
    per_feed = warmup + runs
    if len(traces) != per_feed * len(feeds):
        raise DifforgeError(
            f"{component}: the profile holds {len(traces)} runs, expected {per_feed * len(feeds)}"
        )
    modules = tables.deepest
    return [
        [split_trace(t, modules, name) for t in traces[i * per_feed + warmup : (i + 1) * per_feed]]
        for i in range(len(feeds))
    ]


def attention_rows(
    traces: Sequence[Trace], modules: Mapping[str, Mapping[str, str]]
) -> list[dict[str, Any]]:
    """The report's ``ops.attention`` rows: per component with self-attention time, its core
    and projection seconds and their share of the component's kernel time. ``modules`` maps
    each component to its node -> deepest module table."""
    rows = []
    for trace in traces:
        table = modules.get(trace.component)
        if table is None:
            continue
        split = split_trace(trace, table)
        if split.core + split.proj <= 0:
            continue
        rows.append(
            {
                "component": trace.component,
                "module": SELF_ATTENTION,
                "core_s": split.core,
                "proj_s": split.proj,
                "share": (split.core + split.proj) / split.kernel if split.kernel else 0.0,
            }
        )
    return rows
