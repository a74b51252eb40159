"""The pipeline model of a Triton repository: difforge's sampling loop as a Python-backend
model whose runners call the component models through BLS.

The repository's ``pipeline/1/model.py`` imports :class:`TritonPythonModel` from here; the
logic is :class:`PipelineModel`, which takes Triton's ``triton_python_backend_utils`` module
as an argument so that it runs (and is tested) outside the server with a fake one.

``initialize`` loads the manifest and the tokenizer files carried in ``1/artifact/``, checked
against the manifest's hashes (the graphs are not there: the component models hold them).
``execute`` answers each request in order: a JSON request that does not parse or that the
artifact cannot serve gets an error response naming the field (``INVALID_ARG``), a failure
while generating one naming the component (``INTERNAL``); the other requests of the batch are
answered as usual, and the model stays loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from difforge.artifact.files import verify_files
from difforge.artifact.manifest import read_manifest
from difforge.errors import DifforgeError
from difforge.runtime.pipeline import Pipeline
from difforge.serve.schema import RequestError
from difforge.serve.service import Service
from difforge.serve.triton.bls_runner import TritonBlsRunner
from difforge.serve.triton.layout import (
    ARTIFACT_FOLDER,
    IMAGE_OUTPUT,
    REQUEST_INPUT,
    read_components_parameter,
    runtime_files,
)
from difforge.serve.triton.request_json import request_bytes


def load_pipeline(root: Path, components: dict[str, tuple[str, bool]], pb_utils: Any) -> Pipeline:
    """The runtime pipeline of the artifact files at ``root`` (manifest and tokenizers), each
    component run by a :class:`TritonBlsRunner` on its Triton model (``components``: key ->
    (model name, batched))."""
    manifest = read_manifest(root, verify=False)  # the graphs are in the component models
    present = {rel: manifest.files[rel] for rel in runtime_files(manifest)}
    if present:
        verify_files(root, present)
    missing = sorted(set(manifest.components) - set(components))
    if missing:
        raise DifforgeError(
            f"the pipeline model's config maps no Triton model to {', '.join(missing)}"
        )
    runners: dict[str, Any] = {
        key: TritonBlsRunner(key, entry, *components[key], pb_utils)
        for key, entry in manifest.components.items()
    }
    return Pipeline(root, manifest, runners)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, DifforgeError):
        return first
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class PipelineModel:
    """Triton's Python-model interface (``initialize``/``execute``/``finalize``) over
    difforge's runtime pipeline, with ``pb_utils`` passed in."""

    def __init__(self, pb_utils: Any) -> None:
        self.pb = pb_utils
        self.pipeline: Pipeline | None = None

    def initialize(self, args: dict[str, str]) -> None:
        """``args`` as Triton passes them: ``model_config`` (JSON), ``model_repository`` (this
        model's folder), ``model_version``."""
        config = json.loads(args["model_config"])
        components = read_components_parameter(config)
        root = Path(args["model_repository"]) / str(args["model_version"]) / ARTIFACT_FOLDER
        self.pipeline = load_pipeline(root, components, self.pb)
        self.service = Service(self.pipeline, max_batch=None)  # the artifact's own limit

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request, in order."""
        return [self._answer(request) for request in requests]

    def finalize(self) -> None:
        self.pipeline = None

    def _error(self, message: str, code: str) -> Any:
        error_type = self.pb.TritonError
        error = (
            error_type(message, getattr(error_type, code))
            if hasattr(error_type, code)
            else error_type(message)
        )
        return self.pb.InferenceResponse(output_tensors=[], error=error)

    def _answer(self, request: Any) -> Any:
        if self.pipeline is None:
            return self._error("the pipeline model is not initialized", "UNAVAILABLE")
        try:
            tensor = self.pb.get_input_tensor_by_name(request, REQUEST_INPUT)
            if tensor is None:
                raise RequestError(400, f"the request has no '{REQUEST_INPUT}' input")
            # the HTTP server's request format and checks, before any model is called
            generate = self.service.admit(request_bytes(tensor.as_numpy())).job.request
        except RequestError as exc:
            return self._error(str(exc), "INVALID_ARG")
        try:
            result = self.pipeline(generate)
        except Exception as exc:  # answered, so that the model keeps serving
            return self._error(_one_line(exc), "INTERNAL")
        return self.pb.InferenceResponse(
            output_tensors=[self.pb.Tensor(IMAGE_OUTPUT, result.images)]
        )


class TritonPythonModel(PipelineModel):
    """What Triton's Python backend instantiates (no arguments): :class:`PipelineModel` with
    the server's own ``triton_python_backend_utils``."""

    def __init__(self) -> None:
        import triton_python_backend_utils as pb_utils

        super().__init__(pb_utils)
