"""Artifact folder -> runnable pipeline, checking the manifest on the way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from difforge.errors import DifforgeError
from difforge.runtime.manifest import Manifest, read_manifest
from difforge.runtime.pipeline import Pipeline
from difforge.runtime.runners.base import Runner
from difforge.runtime.runners.ort import OrtRunner

ROLES = ("denoiser", "vae_decoder")


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check_runtime_versions(manifest: Manifest) -> None:
    """Refuse an engine built by a newer ONNX Runtime than the one installed here.

    An optimised graph may use contrib ops or fusions an older runtime does not know; an older
    build on a newer runtime is fine (ONNX Runtime is backward compatible).
    """
    import onnxruntime as ort

    built_with = manifest.versions.get("onnxruntime")
    if built_with and _version_tuple(ort.__version__)[:2] < _version_tuple(built_with)[:2]:
        raise DifforgeError(
            f"artifact was built with onnxruntime {built_with}, but {ort.__version__} is "
            f"installed; upgrade onnxruntime or rebuild the artifact"
        )


def make_runners(
    root: Path, manifest: Manifest, overrides: dict[str, Any] | None = None
) -> dict[str, Runner]:
    engine = manifest.engine or {"backend": "ort", "session": {}}
    backend = engine.get("backend", "ort")
    if backend != "ort":
        raise DifforgeError(f"this runtime has no '{backend}' backend installed")
    settings = dict(engine.get("session", {}))
    settings.update(overrides or {})
    providers = engine.get("providers") or ["CPUExecutionProvider"]
    return {
        role: OrtRunner(role, entry, root / entry.file, settings, providers)
        for role, entry in manifest.components.items()
    }


def load(
    artifact: str | Path,
    *,
    threads: int | None = None,
    verify: bool = True,
    lazy: bool = False,
    session_overrides: dict[str, Any] | None = None,
) -> Pipeline:
    """Load an artifact folder for generation (numpy + onnxruntime only).

    ``verify`` hashes every file against the manifest; a changed file is refused. Sessions are
    created here unless ``lazy`` (then on first use), so generation timings exclude loading.
    """
    root = Path(artifact)
    manifest = read_manifest(root, verify=verify)
    roles = ("denoiser",) if manifest.pipeline.get("pixel_space") else ROLES
    missing = [r for r in roles if r not in manifest.components]
    if missing:
        raise DifforgeError(f"artifact {root} has no {', '.join(missing)} component")
    check_runtime_versions(manifest)
    overrides = dict(session_overrides or {})
    if threads is not None:
        if threads < 0:
            raise DifforgeError(f"--threads must be 0 (all cores) or more, got {threads}")
        overrides["intra_op_num_threads"] = threads
    pipeline = Pipeline(root, manifest, make_runners(root, manifest, overrides))
    if not lazy:
        for runner in pipeline.runners.values():
            runner.activate()
    return pipeline
