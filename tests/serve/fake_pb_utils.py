"""A recording fake of Triton's ``triton_python_backend_utils`` and an in-process server for
the component models of a repository written by ``difforge export-triton``.

The fake follows the Python backend's documented API (python_backend README, "Business Logic
Scripting" and "Error Handling"): ``Tensor(name, array)`` with ``name()``/``as_numpy()``,
``InferenceRequest(model_name=, requested_output_names=, inputs=[, preferred_memory=])``
with ``exec()``, ``InferenceResponse(output_tensors=, error=)`` with ``has_error()``,
``error().message()`` and ``output_tensors()``, ``TritonError(message[, code])``,
``get_input_tensor_by_name`` / ``get_output_tensor_by_name`` (None when absent),
``PreferredMemory(kind, device_id)`` and ``TRITONSERVER_MEMORY_CPU``.

:class:`InProcessTriton` plays the server: each component model is read from its own folder
(``config.pbtxt`` parsed as a ``ModelConfig``, the graph in ``1/``) and run by difforge's ONNX
Runtime runner on that copied graph, with Triton's contract applied on the way: the request's
tensors checked against the config's data types and dims (the batch dim against
``max_batch_size``), ``reshape`` applied to inputs and undone on outputs, only the requested
outputs returned. Every BLS call is recorded.
"""

from __future__ import annotations

import dataclasses
import json
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc

from difforge.artifact.manifest import read_manifest
from difforge.runtime.runners.base import Runner
from difforge.runtime.runners.ort import OrtRunner
from difforge.serve.triton import config as triton_config
from difforge.serve.triton.layout import ARTIFACT_FOLDER, MARKER

TRITONSERVER_MEMORY_CPU = 0
NUMPY_TYPES = {
    mc.TYPE_FP32: np.float32,
    mc.TYPE_FP16: np.float16,
    mc.TYPE_INT64: np.int64,
    mc.TYPE_INT32: np.int32,
    mc.TYPE_BOOL: np.bool_,
    mc.TYPE_UINT8: np.uint8,
    mc.TYPE_STRING: np.object_,
}


class TritonError:
    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS = range(7)

    def __init__(self, message: str, code: int = 1) -> None:
        self._message, self._code = message, code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        if not isinstance(array, np.ndarray):
            raise TypeError("pb_utils.Tensor takes a numpy array")
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array

    def is_cpu(self) -> bool:
        return True


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor] | None = None, error: Any = None) -> None:
        self._tensors = list(output_tensors or [])
        self._error = error

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> Any:
        return self._error

    def output_tensors(self) -> list[Tensor]:
        return self._tensors


@dataclass(frozen=True)
class PreferredMemory:
    preferred_memory_type: int
    preferred_device_id: int = 0


def get_input_tensor_by_name(request: Any, name: str) -> Tensor | None:
    return next((t for t in request.inputs() if t.name() == name), None)


def get_output_tensor_by_name(response: InferenceResponse, name: str) -> Tensor | None:
    return next((t for t in response.output_tensors() if t.name() == name), None)


@dataclass
class Call:
    """One BLS request as the fake server received it."""

    model: str
    outputs: list[str]
    shapes: dict[str, tuple[int, ...]]
    preferred_memory: Any


@dataclass
class ServedModel:
    config: Any
    runner: Runner


@dataclass
class InProcessTriton:
    """The component models of ``repository``, each run from its own folder."""

    repository: Path
    models: dict[str, ServedModel] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        marker = json.loads((self.repository / MARKER).read_text())
        pipeline = self.repository / marker["pipeline"] / "1" / ARTIFACT_FOLDER
        manifest = read_manifest(pipeline, verify=False)
        for name, key in marker["models"].items():
            folder = self.repository / name
            config = triton_config.parse((folder / "config.pbtxt").read_text())
            graph = f"1/{config.default_model_filename}"
            entry = dataclasses.replace(manifest.components[key], file=graph)
            self.models[name] = ServedModel(config, OrtRunner.from_artifact(key, entry, folder, {}))

    def pipeline_args(self, name: str = "pipeline") -> dict[str, str]:
        """``initialize``'s args as Triton's Python backend passes them."""
        config = triton_config.parse((self.repository / name / "config.pbtxt").read_text())
        return {
            "model_config": json_format.MessageToJson(config, preserving_proto_field_name=True),
            "model_instance_kind": "CPU",
            "model_instance_device_id": "0",
            "model_repository": str(self.repository / name),
            "model_version": "1",
            "model_name": name,
        }

    def infer(self, request: InferenceRequest) -> InferenceResponse:
        self.calls.append(
            Call(
                request.model_name,
                list(request.requested_output_names),
                {t.name(): t.as_numpy().shape for t in request.inputs()},
                request.preferred_memory,
            )
        )
        served = self.models.get(request.model_name)
        if served is None:
            return InferenceResponse(error=TritonError(f"model '{request.model_name}' not found"))
        try:
            return self._run(served, request)
        except Exception as exc:
            return InferenceResponse(error=TritonError(f"{type(exc).__name__}: {exc}"))

    @staticmethod
    def _check(tensor: Any, value: np.ndarray, batched: bool, max_batch: int) -> None:
        if value.dtype != NUMPY_TYPES[tensor.data_type]:
            raise ValueError(f"{tensor.name}: dtype {value.dtype} is not the config's")
        shape = list(value.shape)
        if batched:
            if not shape or not 1 <= shape[0] <= max_batch:
                raise ValueError(f"{tensor.name}: batch of {shape} over {max_batch}")
            shape = shape[1:]
        dims = list(tensor.dims)
        if len(shape) != len(dims) or any(
            d not in (-1, s) for d, s in zip(dims, shape, strict=True)
        ):
            raise ValueError(f"{tensor.name}: shape {value.shape} does not fit dims {dims}")

    def _run(self, served: ServedModel, request: InferenceRequest) -> InferenceResponse:
        config = served.config
        batched = config.max_batch_size > 0
        feeds: dict[str, np.ndarray] = {}
        given = {t.name(): t.as_numpy() for t in request.inputs()}
        for tensor in config.input:
            value = given.pop(tensor.name)
            self._check(tensor, value, batched, config.max_batch_size)
            if tensor.HasField("reshape"):
                lead = list(value.shape[:1]) if batched else []
                value = value.reshape([*lead, *tensor.reshape.shape])
            feeds[tensor.name] = value
        if given:
            raise ValueError(f"inputs not in the config: {sorted(given)}")
        outputs = served.runner.infer(feeds)
        tensors = []
        for tensor in config.output:
            if tensor.name not in request.requested_output_names:
                continue
            value = outputs[tensor.name]
            if tensor.HasField("reshape"):
                lead = list(value.shape[:1]) if batched else []
                value = value.reshape([*lead, *tensor.dims])
            self._check(tensor, value, batched, config.max_batch_size)
            tensors.append(Tensor(tensor.name, value))
        return InferenceResponse(output_tensors=tensors)


class InferenceRequest:
    """A request: made by the pipeline model for BLS (``exec``), or by a test as the request
    Triton hands to ``execute``."""

    server: InProcessTriton | None = None

    def __init__(
        self,
        model_name: str,
        requested_output_names: list[str],
        inputs: list[Tensor],
        preferred_memory: PreferredMemory | None = None,
    ) -> None:
        self.model_name = model_name
        self.requested_output_names = list(requested_output_names)
        self._inputs = list(inputs)
        self.preferred_memory = preferred_memory

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def exec(self) -> InferenceResponse:
        if self.server is None:
            raise RuntimeError("no server")
        return self.server.infer(self)


def fake_pb_utils(server: InProcessTriton) -> types.ModuleType:
    """A ``triton_python_backend_utils`` whose BLS requests go to ``server``."""
    module = types.ModuleType("triton_python_backend_utils")
    request_type = type("InferenceRequest", (InferenceRequest,), {"server": server})
    for name, value in {
        "Tensor": Tensor,
        "TritonError": TritonError,
        "InferenceResponse": InferenceResponse,
        "InferenceRequest": request_type,
        "PreferredMemory": PreferredMemory,
        "TRITONSERVER_MEMORY_CPU": TRITONSERVER_MEMORY_CPU,
        "get_input_tensor_by_name": get_input_tensor_by_name,
        "get_output_tensor_by_name": get_output_tensor_by_name,
    }.items():
        setattr(module, name, value)
    return module


def json_request(pb_utils: Any, payload: Any, model: str = "pipeline") -> Any:
    """The request Triton hands the pipeline model for ``payload`` (JSON-encoded, or bytes as
    given), its ``request`` tensor one BYTES element."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    tensor = pb_utils.Tensor("request", np.array([raw], dtype=object))
    return pb_utils.InferenceRequest(model_name=model, requested_output_names=["image"],
                                     inputs=[tensor])
