"""difforge: a deployment compiler for patched diffusion models.

    import difforge
    config = difforge.ExportConfig(output=Path("a"), preset="tiny-sd")
    difforge.compile(difforge.CompileConfig(config))
    pipe = difforge.load("a")
    image = pipe(difforge.GenerateRequest(prompt="a cat", steps=20)).images[0]

Heavy modules (torch, diffusers) load only when export/build/compile are called; ``load`` and
the runtime need numpy and onnxruntime alone.
"""

from __future__ import annotations

from difforge._version import __version__
from difforge.api import build, calibrate, compile, export, info, serve_http
from difforge.config import (
    BuildConfig,
    CalibrateConfig,
    CompileConfig,
    ExportConfig,
    PrecisionConfig,
    ResolutionRange,
    ServeOptions,
)
from difforge.errors import DifforgeError
from difforge.runtime import GenerateRequest, GenerateResult, Pipeline, load

__all__ = [
    "BuildConfig",
    "CalibrateConfig",
    "CompileConfig",
    "DifforgeError",
    "ExportConfig",
    "GenerateRequest",
    "GenerateResult",
    "Pipeline",
    "PrecisionConfig",
    "ResolutionRange",
    "ServeOptions",
    "__version__",
    "build",
    "calibrate",
    "compile",
    "export",
    "info",
    "load",
    "serve_http",
]
