"""PyTorch component -> ONNX file, with torch.export (dynamo) and dynamic shapes from its spec."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from difforge.errors import DifforgeError
from difforge.exporter.components import Component

DEFAULT_OPSET = 20
#: Above this the weights go to an external data file next to the graph (protobuf's 2 GiB cap).
EXTERNAL_DATA_BYTES = 1 << 30


def _param_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def custom_translations() -> dict[Any, Any]:
    """Translations for difforge's custom torch ops, if the plugins package provides them."""
    try:
        from difforge.plugins import onnx_ops
    except ImportError:
        return {}
    return dict(getattr(onnx_ops, "CUSTOM_TRANSLATION_TABLE", {}))


def _positional(
    shapes: dict[str, dict[int, Any]], names: list[str], module: torch.nn.Module
) -> tuple[Any, ...]:
    """Dynamic shapes by position. Wrappers take patches' extra inputs as ``*extra``, which
    torch.export sees as one nested tuple (and not at all when it is empty)."""
    import inspect

    params = inspect.signature(module.forward).parameters.values()
    fixed = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    head = [shapes.get(n) for n in names[: len(fixed)]]
    rest = [shapes.get(n) for n in names[len(fixed) :]]
    return (*head, tuple(rest)) if rest else tuple(head)


def export_component(
    component: Component,
    path: Path,
    opset: int = DEFAULT_OPSET,
    extra_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Export one component to ``path`` (a ``model.onnx``); returns the path."""
    spec = component.spec
    sample = spec.sample_inputs(spec.trace_sizes())
    names = [t.name for t in spec.inputs]
    args = tuple(sample[n] for n in names)
    external = _param_bytes(component.module) > EXTERNAL_DATA_BYTES
    path.parent.mkdir(parents=True, exist_ok=True)
    # Signature-inference chatter about custom-op translations, and the version converter's
    # traceback when it cannot reach the requested opset (_check_opset says that in one line).
    quiet = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                component.module,
                args,
                dynamo=True,
                opset_version=opset,
                input_names=names,
                output_names=[t.name for t in spec.outputs],
                dynamic_shapes=_positional(spec.dynamic_shapes(), names, component.module),
                custom_translation_table=custom_translations() or None,
                verbose=False,
                **(extra_kwargs or {}),
            )
            assert program is not None  # dynamo=True always returns an ONNXProgram
            stable_metadata(program)
            program.save(str(path), external_data=external)
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
    _check_opset(path, opset, spec.role)
    _attach_plugin_functions(path)
    return path


RANGES = "pkg.torch.export.ExportedProgram.range_constraints"


def stable_metadata(program: Any) -> None:
    """The exporter writes torch.export's symbol ranges in its dict's order, which follows
    Python's hash seed; sorted, the same model exports to the same bytes in every process."""
    props = program.model.graph.metadata_props
    if RANGES in props:
        ranges = program.exported_program.range_constraints
        props[RANGES] = "{" + ", ".join(sorted(f"{k}: {v}" for k, v in ranges.items())) + "}"


def _check_opset(path: Path, requested: int, role: str) -> None:
    """torch's exporter writes opset 18+ and converts to the requested one; when that fails it
    keeps what it wrote, with only a log line (silenced above) to say so."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    written = next(
        (int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None
    )
    if written is None or written == requested:
        return
    if requested > written:
        hint = f"choose one it supports (the default is {DEFAULT_OPSET})"
    else:
        hint = (
            "onnx's version converter has no adapter for one of its ops; "
            f"use --opset {written} or later"
        )
    raise DifforgeError(
        f"torch's ONNX exporter could not write the {role} at opset {requested} "
        f"(it wrote opset {written}): {hint}"
    )


def _attach_plugin_functions(path: Path) -> None:
    """Give difforge custom-op nodes their standard-op fallback bodies (if any are used)."""
    try:
        from difforge.plugins import onnx_ops
    except ImportError:
        return
    attach = getattr(onnx_ops, "attach_fallback_functions", None)
    if attach is None:
        return
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    if not any(node.domain == "difforge" for node in model.graph.node):
        return
    onnx.save(attach(model), str(path))
