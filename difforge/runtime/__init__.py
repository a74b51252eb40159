"""The torch-free runtime: load an artifact and generate with numpy + onnxruntime.

Nothing here (or below) may import torch, diffusers or transformers: a Jetson or an edge box
installs ``difforge[runtime]`` only, and a test runs a whole generation in a subprocess to
prove these modules stay out of ``sys.modules``.
"""

from difforge.runtime.loader import load
from difforge.runtime.pipeline import GenerateRequest, GenerateResult, Pipeline

__all__ = ["GenerateRequest", "GenerateResult", "Pipeline", "load"]
