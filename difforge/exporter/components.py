"""The exportable components of each pipeline kind: a wrapper module plus its spec.

One declarative builder per pipeline kind (``difforge.exporter.configs``), registered by the
kind a source declares; the wrappers (:mod:`difforge.exporter.wrappers`) fix the graph
interface the runtime expects.
"""

from __future__ import annotations

from typing import Any

from difforge.errors import DifforgeError
from difforge.exporter.configs import BUILDERS
from difforge.exporter.configs.common import BuildRequest, Component
from difforge.sources.base import SourceModel

__all__ = ["Component", "components_for"]


def components_for(
    source: SourceModel,
    max_batch: int = 2,
    extra_inputs: list[Any] | None = None,
    wrapper_options: dict[str, Any] | None = None,
) -> dict[str, Component]:
    """Every component of ``source`` with its spec; batch ranges allow for CFG's doubling.

    ``extra_inputs`` (patches' ``ExtraInputSpec``) become additional denoiser inputs of fixed
    shape, passed to the U-Net as ``cross_attention_kwargs``; ``wrapper_options`` are what
    patches need the denoiser wrapper to pass (``Patch.wrapper_options``).
    """
    extras = list(extra_inputs or [])
    if extras and source.kind not in ("text-to-image", "sdxl"):
        names = ", ".join(e.name for e in extras)
        raise DifforgeError(f"per-step inputs ({names}) are supported on U-Net models only")
    builder = BUILDERS.get(source.kind)
    if builder is None:
        raise DifforgeError(f"no component configs for a {source.kind} model")
    return builder(BuildRequest(source, max_batch, extras, wrapper_options or {}))
