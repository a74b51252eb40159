"""Serving compiled artifacts on existing serving engines: Ray Serve (``difforge serve``) and
NVIDIA Triton Inference Server (``difforge export-triton``, a model repository).

Serving reads the artifact and runs the torch-free runtime; nothing here imports torch or
difforge's compiler stages. Each engine's module imports its own libraries lazily.
"""
