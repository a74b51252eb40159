"""Artifact folder -> runnable pipeline, checking the manifest on the way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from difforge.artifact.manifest import Manifest, read_manifest
from difforge.errors import DifforgeError
from difforge.runtime.pipeline import Pipeline
from difforge.runtime.runners import runner_class
from difforge.runtime.runners.base import Runner

#: what a component with no engine record (an export folder's plain ONNX graph) runs on
EXPORTED_GRAPHS = "ort"


def make_runners(
    root: Path, manifest: Manifest, overrides: dict[str, Any] | None = None
) -> dict[str, Runner]:
    """One runner per component, of the backend its engine record names."""
    backends = {
        key: entry.engine.backend if entry.engine is not None else EXPORTED_GRAPHS
        for key, entry in manifest.components.items()
    }
    classes = {backend: runner_class(backend) for backend in dict.fromkeys(backends.values())}
    for cls in classes.values():
        cls.check_artifact(manifest)
    runners = {
        key: classes[backends[key]].from_artifact(key, entry, root, dict(overrides or {}))
        for key, entry in manifest.components.items()
    }
    # what the step plan carries from one call to a later one never goes back to the host
    # loop (the loop reads the noise prediction): a runner may keep it on its device
    carried = set(manifest.plan.carry.values()) - {"noise_pred"}
    for key, runner in runners.items():
        outputs = {t.name for t in manifest.components[key].outputs}
        runner.carried_outputs = frozenset(carried & outputs)
    return runners


def load(
    artifact: str | Path,
    *,
    threads: int | None = None,
    verify: bool = True,
    lazy: bool = False,
    session_overrides: dict[str, Any] | None = None,
    providers: list[str] | None = None,
    io_binding: bool | None = None,
) -> Pipeline:
    """Load an artifact folder for generation (numpy + the engine's runtime only).

    ``verify`` hashes every file against the manifest; a changed file is refused. Sessions are
    created here unless ``lazy`` (then on first use), so generation timings exclude loading.
    ``providers`` replaces the ONNX Runtime execution providers the artifact records (ONNX
    Runtime artifacts only), e.g. ``["CUDAExecutionProvider", "CPUExecutionProvider"]``.
    ``io_binding`` runs ONNX Runtime sessions through I/O binding, the state carried between
    steps left on the device (default: on with a GPU provider, off on the CPU).
    """
    root = Path(artifact)
    manifest = read_manifest(root, verify=verify)  # its components checked against its kind
    overrides = dict(session_overrides or {})
    if providers is not None:
        if not providers or not all(isinstance(p, str) for p in providers):
            raise DifforgeError("providers must be a non-empty list of ONNX Runtime provider names")
        overrides["providers"] = list(providers)
    if threads is not None:
        overrides["intra_op_num_threads"] = threads
    if io_binding is not None:
        overrides["io_binding"] = io_binding
    pipeline = Pipeline(root, manifest, make_runners(root, manifest, overrides))
    if not lazy:
        for runner in pipeline.runners.values():
            runner.activate()
    return pipeline
