"""What an artifact becomes in a Triton model repository: one model per component graph,
its files, its batching, its data types; and the files the pipeline model carries.

No Triton library is needed here: the repository writer and the served pipeline model (in
Triton's Python environment, where only difforge's core is installed) both read this module,
so the two agree on model names and on which tensors travel reshaped.

- **Names.** A component's model is named after its key; a step-plan variant's key
  ``denoiser@shallow`` becomes ``denoiser__shallow`` ('@' is not a character Triton's model
  names and URLs take safely).
- **Engines.** ONNX Runtime engines and export folders' plain graphs -> Triton's
  ``onnxruntime`` backend (``model.onnx`` with its external data beside it); TensorRT plans
  -> ``tensorrt_plan`` (``model.plan``). OpenVINO engines are refused: their settings (the
  precision hint, the compiled blob, a bf16 build's CPU check) would not travel to Triton's
  ``openvino`` backend, and no test here could run one.
- **Batching.** A component whose every input and output has the ``batch`` axis first is
  served with ``max_batch_size`` = the batch axis's max and Triton's dynamic batcher (the
  batch dim left out of ``dims``); any other (a per-step table input of fixed shape, say) gets
  ``max_batch_size: 0`` and full dims. A tensor whose dims come out empty travels as ``[1]``
  with ``reshape { shape: [] }`` (Triton needs non-empty dims); :func:`wire_reshaped` says which.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from difforge.artifact.manifest import ComponentEntry, Manifest, TensorSpec
from difforge.errors import DifforgeError

#: the axis Triton's batcher owns
BATCH_AXIS = "batch"
#: the folder, inside the pipeline model's version folder, holding the artifact's manifest and
#: the files the runtime reads (tokenizers), not the graphs
ARTIFACT_FOLDER = "artifact"
#: the pipeline model's config parameter mapping component keys to their Triton models
COMPONENTS_PARAMETER = "components"
#: the file at the repository's top that marks it as written by difforge (``--force`` replaces
#: only such folders and empty ones)
MARKER = "difforge-triton.json"
MARKER_FORMAT = "difforge-triton-repository"
DEFAULT_PIPELINE = "pipeline"
#: the pipeline model's tensors: one JSON request in (BYTES, [1]), the images (N, H, W, 3) out
REQUEST_INPUT = "request"
IMAGE_OUTPUT = "image"

#: manifest dtype -> Triton data type name (``model_config_pb2.DataType``)
TRITON_TYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "bfloat16": "TYPE_BF16",
    "float64": "TYPE_FP64",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "bool": "TYPE_BOOL",
}
#: engine backend (None: an export folder's plain ONNX graph) -> (Triton backend, platform,
#: the file name Triton looks for in the version folder)
GRAPH_KINDS: dict[str | None, tuple[str, str, str]] = {
    None: ("onnxruntime", "", "model.onnx"),
    "ort": ("onnxruntime", "", "model.onnx"),
    "tensorrt": ("tensorrt", "tensorrt_plan", "model.plan"),
}
_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def model_name(key: str) -> str:
    """The Triton model of component ``key`` (``denoiser@shallow`` -> ``denoiser__shallow``)."""
    name = key.replace("@", "__")
    if not _NAME.fullmatch(name):
        raise DifforgeError(
            f"component {key!r} has no Triton model name (letters, digits, '_', '.', '-')"
        )
    return name


def check_pipeline_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise DifforgeError(
            f"--pipeline-name {name!r}: expected letters, digits, '_', '.' or '-' "
            "(at most 128, starting with a letter or digit)"
        )
    return name


def is_batched(entry: ComponentEntry) -> bool:
    """Every input and output has the batch axis first (Triton's batching contract)."""
    tensors = [*entry.inputs, *entry.outputs]
    return (
        BATCH_AXIS in entry.axes
        and bool(tensors)
        and all(t.shape and t.shape[0] == BATCH_AXIS for t in tensors)
    )


def why_not_batched(entry: ComponentEntry) -> str:
    """Why ``entry`` is served with ``max_batch_size: 0`` (for the repository's README)."""
    if BATCH_AXIS not in entry.axes:
        return "the component has no batch axis"
    odd = [t.name for t in [*entry.inputs, *entry.outputs] if not t.shape or t.shape[0] != "batch"]
    return f"{', '.join(odd)} {'has' if len(odd) == 1 else 'have'} no leading batch axis"


def triton_dims(tensor: TensorSpec, batched: bool) -> tuple[list[int], bool]:
    """(dims, reshaped): symbolic dims -> -1, the batch dim left out when ``batched``; empty
    dims become ``[1]`` with ``reshape { shape: [] }`` (``reshaped`` True)."""
    shape = tensor.shape[1:] if batched else tensor.shape
    dims = [d if isinstance(d, int) else -1 for d in shape]
    if not dims and not batched:
        # Triton refuses an empty reshape in a model without batching, and a 0-d tensor
        # needs one
        raise DifforgeError(
            f"tensor '{tensor.name}' has no dimensions in a component Triton cannot batch: "
            "Triton has no config for it"
        )
    return (dims, False) if dims else ([1], True)


def wire_reshaped(tensor: TensorSpec, batched: bool) -> bool:
    """Whether ``tensor`` travels with a trailing 1 ([B] as [B, 1]) to and from Triton."""
    return triton_dims(tensor, batched)[1]


def triton_type(key: str, tensor: TensorSpec) -> str:
    try:
        return TRITON_TYPES[tensor.dtype]
    except KeyError:
        raise DifforgeError(
            f"{key}.{tensor.name}: dtype {tensor.dtype!r} has no Triton data type here "
            f"(known: {', '.join(TRITON_TYPES)})"
        ) from None


@dataclass
class ComponentModel:
    """One component graph as a Triton model."""

    key: str
    name: str
    backend: str
    platform: str
    filename: str
    batched: bool
    max_batch_size: int
    gpu: bool
    #: artifact path -> path inside the model's version folder (the graph first)
    files: dict[str, str] = field(default_factory=dict)
    #: ONNX Runtime session settings as the onnxruntime backend's parameters
    parameters: dict[str, str] = field(default_factory=dict)
    #: a TensorRT plan's optimization profiles (one per resolution bucket, as built); Triton
    #: uses only profile 0 unless an instance group lists them
    profiles: int = 0


def _engine_kind(key: str, entry: ComponentEntry) -> tuple[str, str, str]:
    backend = entry.engine.backend if entry.engine is not None else None
    if backend == "openvino":
        raise DifforgeError(
            f"component {key} is an OpenVINO engine; export-triton maps ONNX Runtime and "
            "TensorRT engines only (build the export with --backend ort or tensorrt)"
        )
    if backend not in GRAPH_KINDS:
        raise DifforgeError(f"component {key}: engine backend {backend!r} has no Triton backend")
    plugins = sorted(op for op, mode in (entry.engine.custom_ops if entry.engine else {}).items()
                     if mode == "plugin")
    if plugins:
        raise DifforgeError(
            f"component {key} keeps {', '.join(plugins)} as plugin nodes, which Triton's "
            "backends cannot run; build with --custom-ops inline"
        )
    return GRAPH_KINDS[backend]


def _graph_files(
    manifest: Manifest, key: str, entry: ComponentEntry, filename: str
) -> dict[str, str]:
    """The files the component's graph reads -> their place in the version folder: the graph
    as ``filename``, its external data under the same names beside it (ONNX resolves them
    against the graph's folder)."""
    if entry.engine is not None:
        listed = [entry.file, *entry.engine.files]
    else:  # an export folder's graph: its external data lies in its folder, named after it
        folder = PurePosixPath(entry.file).parent
        others = {c.file for k, c in manifest.components.items() if k != key}
        listed = [entry.file] + [
            rel for rel in manifest.files
            if PurePosixPath(rel).parent == folder and rel not in others
            and not rel.endswith(".onnx")
        ]
    if entry.file not in manifest.files:
        raise DifforgeError(f"component {key}: {entry.file} is not in the artifact's files")
    base = PurePosixPath(entry.file).parent
    out = {entry.file: filename}
    for rel in dict.fromkeys(listed[1:]):
        if rel == entry.file:
            continue
        path = PurePosixPath(rel)
        if base not in path.parents:
            raise DifforgeError(f"component {key}: {rel} does not lie beside its graph")
        inner = path.relative_to(base).as_posix()
        if inner == filename:
            raise DifforgeError(f"component {key}: {rel} would overwrite its graph's {filename}")
        out[rel] = inner
    if entry.engine is not None and entry.engine.backend == "tensorrt" and (
        not entry.file.endswith(".plan") or entry.file not in entry.engine.files
    ):
        raise DifforgeError(f"component {key}: its TensorRT engine record names no .plan file")
    return out


def _ort_parameters(entry: ComponentEntry) -> tuple[dict[str, str], bool]:
    settings: dict[str, Any] = dict(entry.engine.settings) if entry.engine else {}
    params: dict[str, str] = {}
    for ours, theirs in (("intra_op_num_threads", "intra_op_thread_count"),
                         ("inter_op_num_threads", "inter_op_thread_count")):
        value = settings.get(ours)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            params[theirs] = str(value)
    providers = settings.get("providers") or []
    gpu = isinstance(providers, list) and any(p in _GPU_PROVIDERS for p in providers)
    return params, gpu


def _profiles(entry: ComponentEntry) -> int:
    """How many optimization profiles the TensorRT builder recorded (its ``buckets``)."""
    buckets = entry.engine.settings.get("buckets") if entry.engine is not None else None
    return len(buckets) if isinstance(buckets, list) else 0


def component_models(manifest: Manifest) -> list[ComponentModel]:
    """Every component as a Triton model, or one line saying why the artifact cannot be."""
    models: list[ComponentModel] = []
    for key, entry in manifest.components.items():
        backend, platform, filename = _engine_kind(key, entry)
        for tensor in [*entry.inputs, *entry.outputs]:
            triton_type(key, tensor)
        batched = is_batched(entry)
        params, gpu = ({}, True) if backend == "tensorrt" else _ort_parameters(entry)
        models.append(
            ComponentModel(
                key=key,
                name=model_name(key),
                backend=backend,
                platform=platform,
                filename=filename,
                batched=batched,
                max_batch_size=entry.axes[BATCH_AXIS][2] if batched else 0,
                gpu=gpu,
                files=_graph_files(manifest, key, entry, filename),
                parameters=params,
                profiles=_profiles(entry) if backend == "tensorrt" else 0,
            )
        )
    names = [m.name for m in models]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise DifforgeError(f"components map to the same Triton model name: {', '.join(clash)}")
    return models


def runtime_files(manifest: Manifest) -> list[str]:
    """The files the pipeline model's runtime reads besides the manifest: the tokenizers'."""
    out: list[str] = []
    for tok in (manifest.tokenizer, manifest.tokenizer_2):
        out += tok.files if tok is not None else []
    return list(dict.fromkeys(out))


def image_channels(manifest: Manifest) -> int:
    """Channels of the images the pipeline returns: the VAE decoder's (3), or a pixel-space
    model's own (1 for the digits models); -1 where the graph leaves it open."""
    decoder = manifest.components.get("vae_decoder")
    if decoder is None:
        return manifest.pipeline.latent_channels
    image = next((t for t in decoder.outputs if t.name == "image"), None)
    dim = image.shape[1] if image is not None and len(image.shape) == 4 else -1
    return dim if isinstance(dim, int) else -1


def components_parameter(models: list[ComponentModel]) -> str:
    """The pipeline model's map of component key -> its Triton model and batching (JSON)."""
    return json.dumps(
        {m.key: {"model": m.name, "batched": m.batched} for m in models}, sort_keys=True
    )


def read_components_parameter(config: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """:func:`components_parameter` back from a model config as the Python backend passes it
    (``parameters.<key>.string_value``)."""
    try:
        raw = config["parameters"][COMPONENTS_PARAMETER]["string_value"]
        data = json.loads(raw)
        return {
            str(key): (str(value["model"]), bool(value["batched"])) for key, value in data.items()
        }
    except (KeyError, TypeError, ValueError, AttributeError):
        raise DifforgeError(
            f"the pipeline model's config has no valid '{COMPONENTS_PARAMETER}' parameter "
            "(write the repository again with difforge export-triton)"
        ) from None
