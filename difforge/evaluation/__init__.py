"""``difforge eval``: an artifact's images against its PyTorch source, and digit quality.

The PyTorch side runs the same runtime pipeline (scheduler, guidance, step plan, seeds) with
the engine swapped for the patched PyTorch components, so any difference is the engine's.
"""

from __future__ import annotations

from difforge.evaluation.fidelity import psnr, ssim
from difforge.evaluation.run import EvalReport, evaluate

__all__ = ["EvalReport", "evaluate", "psnr", "ssim"]
