"""The repository's ``config.pbtxt`` files as ``tritonclient``'s ``ModelConfig`` messages,
written in protobuf text format (what Triton reads). ``tritonclient`` is the ``triton`` extra;
this module is imported only when a repository is written."""

from __future__ import annotations

from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from difforge.artifact.manifest import ComponentEntry, TensorSpec
from difforge.serve.triton.layout import (
    COMPONENTS_PARAMETER,
    IMAGE_OUTPUT,
    REQUEST_INPUT,
    ComponentModel,
    components_parameter,
    triton_dims,
    triton_type,
)


def _tensor(message: Any, key: str, tensor: TensorSpec, batched: bool) -> None:
    dims, reshaped = triton_dims(tensor, batched)
    message.name = tensor.name
    message.data_type = mc.DataType.Value(triton_type(key, tensor))
    message.dims.extend(dims)
    if reshaped:
        message.reshape.SetInParent()  # reshape { shape: [] }: the model's tensor has no dims


def _instances(config: Any, gpu: bool, count: int, profiles: int = 0) -> None:
    kind = mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU
    group = config.instance_group.add(kind=kind, count=count)
    # every optimization profile of a plan (one per resolution bucket): Triton picks the one
    # that fits each request's shapes, and uses profile 0 only when none is listed
    group.profile.extend(str(i) for i in range(profiles))


def component_config(model: ComponentModel, entry: ComponentEntry, instances: int) -> Any:
    """A component graph's model: backend, its tensors, batching, instances."""
    config = mc.ModelConfig(name=model.name, max_batch_size=model.max_batch_size)
    config.backend = model.backend
    if model.platform:
        config.platform = model.platform
    config.default_model_filename = model.filename
    for spec in entry.inputs:
        _tensor(config.input.add(), model.key, spec, model.batched)
    for spec in entry.outputs:
        _tensor(config.output.add(), model.key, spec, model.batched)
    if model.batched:
        config.dynamic_batching.SetInParent()
    _instances(config, model.gpu, instances, model.profiles)
    for key, value in model.parameters.items():
        config.parameters[key].string_value = value
    return config


def pipeline_config(
    name: str, models: list[ComponentModel], instances: int, channels: int = 3
) -> Any:
    """The Python-backend model running the sampling loop: a JSON request (BYTES, [1]) in,
    uint8 images (N, H, W, ``channels``) out; it batches nothing itself (``max_batch_size:
    0``: one request is one generation, its images the artifact's batch)."""
    config = mc.ModelConfig(name=name, backend="python", max_batch_size=0)
    config.input.add(name=REQUEST_INPUT, data_type=mc.TYPE_STRING, dims=[1])
    config.output.add(name=IMAGE_OUTPUT, data_type=mc.TYPE_UINT8, dims=[-1, -1, -1, channels])
    _instances(config, False, instances)
    config.parameters[COMPONENTS_PARAMETER].string_value = components_parameter(models)
    return config


def to_text(config: Any) -> str:
    return str(text_format.MessageToString(config))


def parse(text: str) -> Any:
    """A ``config.pbtxt`` read back (tests, and a check that what was written parses)."""
    return text_format.Parse(text, mc.ModelConfig())
