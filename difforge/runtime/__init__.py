"""The torch-free runtime: load an artifact and generate with numpy and the engine's runtime.

Nothing here imports torch, diffusers or transformers, and nothing of difforge but the
artifact layer and :mod:`difforge.errors`: a Jetson or an edge box installs the core only, and
a test runs a whole generation in a subprocess to prove the heavy modules stay out of
``sys.modules``.
"""

from difforge.runtime.loader import load
from difforge.runtime.pipeline import GenerateRequest, GenerateResult, Pipeline

__all__ = ["GenerateRequest", "GenerateResult", "Pipeline", "load"]
