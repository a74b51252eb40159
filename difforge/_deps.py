"""Optional packages, imported up front by the commands that need them.

The core install is the torch-free runtime; a command run without its extra should fail before
any work, naming the package (the CLI turns the ``ModuleNotFoundError`` into one line naming
the extra to install), not after minutes of it.
"""

from __future__ import annotations

import importlib

#: what `difforge profile` imports beyond the core (the `profile` extra)
PROFILE = ("onnx", "sympy", "rich", "jsonschema", "matplotlib", "psutil")
#: what rebuilding a PyTorch source needs (`difforge eval`; part of the `compile` extra)
TORCH_SOURCE = ("torch", "diffusers", "transformers", "safetensors")


def require(packages: tuple[str, ...]) -> None:
    for name in packages:
        importlib.import_module(name)
