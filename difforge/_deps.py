"""Optional packages: which extra holds them, and importing them up front.

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


#: packages outside the torch-free core, and the extra of each command that needs them
OPTIONAL_PACKAGES = frozenset(
    [
        "torch",
        "onnx",
        "onnxscript",
        "onnx_ir",
        "polygraphy",
        "diffusers",
        "transformers",
        "safetensors",
        "rich",
        "jsonschema",
        "matplotlib",
        "psutil",
        "sympy",
        "openvino",
        "nncf",
        "sklearn",
        "scipy",
        "triton",
        "onnxruntime",
        "ray",
        "starlette",
        "tritonclient",
        "google",
    ]
)
#: every other command: "compile"
COMMAND_EXTRAS = {"profile": "profile", "bench": "bench", "serve": "serve"}


#: packages that belong to one extra whatever the command (an OpenVINO artifact's runner)
PACKAGE_EXTRAS = {
    "openvino": "openvino",
    "nncf": "openvino",
    "onnxruntime": "cpu",
    "ray": "serve",
    "starlette": "serve",
    "tritonclient": "triton",
    "google": "triton",  # protobuf, which tritonclient's model config is written with
}


def missing_extra_message(command: str | None, exc: ImportError) -> str | None:
    """One line for a command run on an install without its extra (an edge install has the
    torch-free runtime only); None when ``exc`` is not a missing optional package."""
    package = (exc.name or "").partition(".")[0]
    if package not in OPTIONAL_PACKAGES:
        return None
    extra = PACKAGE_EXTRAS.get(package) or COMMAND_EXTRAS.get(command or "", "compile")
    if package == "onnxruntime":
        return (
            f"`difforge {command}` needs ONNX Runtime, which this install lacks: pip install "
            "'difforge[cpu]' (or 'difforge[gpu]' for NVIDIA's onnxruntime-gpu; on a Jetson, "
            "JetPack's onnxruntime-gpu wheel)"
        )
    return (
        f"`difforge {command}` needs {package!r}, which this install lacks (the core is the "
        f"torch-free runtime: run, info ARTIFACT); pip install 'difforge[{extra}]'"
    )


def onnxruntime_distributions() -> list[str]:
    """The installed distributions that provide the ``onnxruntime`` package (onnxruntime,
    onnxruntime-gpu, a platform's own build); more than one overwrite each other's files."""
    from importlib import metadata

    return sorted(set(metadata.packages_distributions().get("onnxruntime", [])))
