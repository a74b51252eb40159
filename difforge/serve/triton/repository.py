"""Artifact -> Triton model repository (``difforge export-triton``).

The repository appears whole or not at all: it is written into a hidden folder beside the
target (named as :mod:`difforge.artifact.staging` names its own, so a later run removes what a
killed one left) and renamed at the end. An existing target is replaced only with ``force``,
and only when it is empty or a repository difforge wrote (its marker file says so).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from difforge.artifact.files import inside
from difforge.artifact.manifest import MANIFEST_NAME, Manifest, read_manifest
from difforge.artifact.staging import remove_stale, replaced_on_success
from difforge.errors import DifforgeError
from difforge.serve.triton import config as triton_config
from difforge.serve.triton.layout import (
    ARTIFACT_FOLDER,
    DEFAULT_PIPELINE,
    MARKER,
    MARKER_FORMAT,
    ComponentModel,
    check_pipeline_name,
    component_models,
    image_channels,
    runtime_files,
)
from difforge.serve.triton.readme import readme_text

#: the most instances per model ``--instances`` takes
MAX_INSTANCES = 64
#: the pipeline model's ``model.py``: the logic stays in difforge, importable and tested
MODEL_PY = '''"""The sampling loop of a difforge artifact as a Triton Python-backend model
(written by difforge export-triton): the loop runs in difforge's torch-free runtime and calls
the component models through BLS. Needs difforge's core in the Python backend's environment."""

from difforge.serve.triton.bls import TritonPythonModel

__all__ = ["TritonPythonModel"]
'''


@dataclass
class ExportResult:
    output: Path
    #: model name -> what it serves (backend and batching), in writing order
    models: dict[str, str] = field(default_factory=dict)
    files: int = 0
    bytes: int = 0


def _is_repository(folder: Path) -> bool:
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == MARKER_FORMAT


def check_output(output: Path, force: bool, artifact: Path) -> None:
    """Refuse before any work: an existing output without ``force``, a folder that is not a
    repository difforge wrote, an output inside the artifact or holding it, an unwritable one."""
    remove_stale(output)
    out, art = output.resolve(), artifact.resolve()
    if out == art or art in out.parents or out in art.parents:
        raise DifforgeError(
            f"{output}: the repository and the artifact must not contain each other"
        )
    if output.exists() or output.is_symlink():
        if not force:
            raise DifforgeError(f"{output} already exists (use --force to replace it)")
        if output.is_symlink() or not output.is_dir():
            raise DifforgeError(f"{output} exists and is not a folder")
        if any(output.iterdir()) and not _is_repository(output):
            raise DifforgeError(
                f"{output} is a folder that is not a Triton repository written by difforge; "
                "--force replaces only those and empty folders (choose another output)"
            )
    probe = output.parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise DifforgeError(f"cannot write {output}: {probe} is not a writable folder")


def staged_repository(output: Path) -> contextlib.AbstractContextManager[Path]:
    """An empty hidden folder beside ``output`` that becomes ``output`` on success and is
    removed on any exception (Ctrl-C and SIGTERM included), leaving ``output`` as it was."""
    return replaced_on_success(output)


def _copy(artifact: Path, rel: str, dst: Path) -> int:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(inside(artifact, rel), dst)
    return dst.stat().st_size


def _write(path: Path, text: str) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path.stat().st_size


def _component(
    root: Path, artifact: Path, manifest: Manifest, model: ComponentModel, instances: int
) -> list[int]:
    folder = root / model.name
    config = triton_config.component_config(model, manifest.components[model.key], instances)
    sizes = [_write(folder / "config.pbtxt", triton_config.to_text(config))]
    sizes += [_copy(artifact, rel, folder / "1" / dst) for rel, dst in model.files.items()]
    return sizes


def _pipeline(
    root: Path, artifact: Path, manifest: Manifest, models: list[ComponentModel], name: str,
    instances: int,
) -> list[int]:
    folder = root / name
    config = triton_config.pipeline_config(name, models, instances, image_channels(manifest))
    sizes = [
        _write(folder / "config.pbtxt", triton_config.to_text(config)),
        _write(folder / "1" / "model.py", MODEL_PY),
        _copy(artifact, MANIFEST_NAME, folder / "1" / ARTIFACT_FOLDER / MANIFEST_NAME),
    ]
    for rel in runtime_files(manifest):
        sizes.append(_copy(artifact, rel, folder / "1" / ARTIFACT_FOLDER / rel))
    return sizes


def export_triton(
    artifact: Path,
    output: Path,
    *,
    force: bool = False,
    instances: int = 1,
    pipeline_name: str = DEFAULT_PIPELINE,
) -> ExportResult:
    """Write the Triton model repository of ``artifact`` to ``output``. Everything is checked
    (the artifact's hashes included) before anything is written."""
    if isinstance(instances, bool) or not 1 <= instances <= MAX_INSTANCES:
        raise DifforgeError(f"--instances must be 1 to {MAX_INSTANCES}, got {instances}")
    check_pipeline_name(pipeline_name)
    artifact, output = Path(artifact), Path(output)
    manifest = read_manifest(artifact, verify=True)
    models = component_models(manifest)
    if pipeline_name in {m.name for m in models}:
        raise DifforgeError(
            f"--pipeline-name {pipeline_name!r} is the name of a component model; choose another"
        )
    check_output(output, force, artifact)
    result = ExportResult(output=output)
    with staged_repository(output) as root:
        sizes: list[int] = []
        for model in models:
            sizes += _component(root, artifact, manifest, model, instances)
            how = model.platform or model.backend
            batching = f"max_batch_size {model.max_batch_size}" if model.batched else "unbatched"
            result.models[model.name] = f"{how}, {batching}"
        sizes += _pipeline(root, artifact, manifest, models, pipeline_name, instances)
        result.models[pipeline_name] = "python (BLS), the sampling loop"
        readme = readme_text(manifest, models, pipeline_name, instances, artifact.resolve().name)
        sizes.append(_write(root / "README.md", readme))
        marker = {
            "format": MARKER_FORMAT,
            "artifact": artifact.resolve().name,
            "pipeline": pipeline_name,
            "models": {m.name: m.key for m in models},
        }
        sizes.append(_write(root / MARKER, json.dumps(marker, indent=2) + "\n"))
        result.files, result.bytes = len(sizes), sum(sizes)
    return result
