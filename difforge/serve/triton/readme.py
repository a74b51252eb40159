"""The README.md written at the top of a Triton repository: what each model is, why it batches
or not (protobuf text format keeps no comments, so the reasons are said here), how to call the
pipeline model, and what the server's Python environment needs."""

from __future__ import annotations

from difforge.artifact.manifest import Manifest
from difforge.serve.triton.layout import (
    ARTIFACT_FOLDER,
    ComponentModel,
    image_channels,
    why_not_batched,
)


def _model_rows(manifest: Manifest, models: list[ComponentModel], instances: int) -> list[str]:
    rows = [
        "| model | component | backend | files in `1/` | batching | instances |",
        "|---|---|---|---|---|---|",
    ]
    for m in models:
        entry = manifest.components[m.key]
        backend = m.platform or m.backend
        files = ", ".join(f"`{name}`" for name in m.files.values())
        batching = (
            f"`max_batch_size: {m.max_batch_size}`, dynamic batching"
            if m.batched
            else f"`max_batch_size: 0` ({why_not_batched(entry)})"
        )
        kind = "KIND_GPU" if m.gpu else "KIND_CPU"
        rows.append(
            f"| `{m.name}` | {m.key} | {backend} | {files} | {batching} | {kind} x{instances} |"
        )
    return rows


def _engine_notes(manifest: Manifest, models: list[ComponentModel]) -> list[str]:
    notes = []
    if any(m.backend == "onnxruntime" for m in models):
        version = manifest.versions.get("onnxruntime", "?")
        notes += [
            f"The ONNX graphs were built with ONNX Runtime {version} and may use its contrib ops "
            "(fused attention and layer norms, listed in each engine's `requires` in the "
            "manifest); Triton's onnxruntime backend must be a build that has them.",
            "",
        ]
    if any(m.platform == "tensorrt_plan" for m in models):
        notes += [
            "A TensorRT plan runs only with the TensorRT version and on the GPU architecture it "
            "was built for (each engine's settings in the manifest name them); its optimization "
            "profiles are the artifact's resolution buckets.",
            "",
        ]
    return notes


def readme_text(
    manifest: Manifest,
    models: list[ComponentModel],
    pipeline: str,
    instances: int,
    artifact_name: str,
) -> str:
    pipe = manifest.pipeline
    if pipe.text_conditioned:
        example = '{"prompt": "a photo of a cat", "steps": 20, "seed": 0}'
        conditioning = "`prompt` (text or a list of texts), `negative_prompt`"
    else:
        example = '{"class_label": 3, "steps": 20, "seed": 0}'
        conditioning = f"`class_label` (0..{pipe.num_classes - 1}, or a list of them)"
    variants = manifest.plan.variants
    plan = (
        "The step plan runs several graphs of one component; each is its own model above, and "
        "the pipeline picks one per step as `difforge run` does: "
        + ", ".join(f"{v} -> `{k.replace('@', '__')}`" for v, k in variants.items())
        + ".\n\n"
        if len(variants) > 1
        else ""
    )
    lines = [
        f"# Triton model repository for `{artifact_name}`",
        "",
        f"Written by `difforge export-triton` from a {pipe.type} artifact. Serve it with",
        "`tritonserver --model-repository <this folder>`.",
        "",
        *_model_rows(manifest, models, instances),
        f"| `{pipeline}` | the sampling loop | python (BLS) | `model.py`, `{ARTIFACT_FOLDER}/` "
        f"| `max_batch_size: 0` | KIND_CPU x{instances} |",
        "",
        "Batching: a component whose every input and output has the batch axis first is served "
        "with `max_batch_size` set to its largest batch (classifier-free guidance doubles each "
        "image) and Triton's dynamic batcher, which merges concurrent calls of the same shape; "
        "the batch dim is then left out of `dims`, and a tensor of shape `[batch]` is declared "
        "`dims: [1]` with `reshape { shape: [] }`. Any other component is served with "
        "`max_batch_size: 0` and its full dims. Symbolic dims (height, width, tokens) are `-1`; "
        "the ranges the artifact was built for are checked by the pipeline before each call.",
        "",
        plan.rstrip("\n") if plan else "",
        "",
        f"## Calling `{pipeline}`",
        "",
        "One input, `request`: a JSON object as one BYTES element (dims `[1]`); one output, "
        f"`image`: uint8 `(N, H, W, {image_channels(manifest)})`. Fields: "
        f"{conditioning}, `steps`, `guidance_scale`, `seed`, `height`, `width`, `scheduler`; "
        "those left out take the artifact's defaults. A bad request is answered with an error "
        "naming the field; the other requests of the same batch are still answered.",
        "",
        "```python",
        "import numpy as np, tritonclient.http as httpclient",
        "client = httpclient.InferenceServerClient('localhost:8000')",
        "request = httpclient.InferInput('request', [1], 'BYTES')",
        f"request.set_data_from_numpy(np.array([b'{example}'], dtype=object))",
        f"images = client.infer('{pipeline}', [request]).as_numpy('image')",
        "```",
        "",
        "## The server's Python environment",
        "",
        f"`{pipeline}/1/model.py` imports difforge: install its core (numpy, tokenizers; no "
        "torch, no ONNX Runtime: the graphs run in Triton's own backends) into the Python "
        "environment of Triton's Python backend, `pip install difforge`. "
        f"`{pipeline}/1/{ARTIFACT_FOLDER}/` holds the artifact's manifest and the files the "
        "runtime reads (tokenizers), checked against the manifest's hashes when the model loads; "
        "the graphs live in the component models only.",
        "",
        *_engine_notes(manifest, models),
    ]
    return "\n".join(line for i, line in enumerate(lines) if line or lines[i - 1]) + "\n"
