"""ONNX Runtime runner: the only place the runtime touches onnxruntime's session API.

It also runs export folders (components with no engine record yet): their graphs are plain
ONNX, which ONNX Runtime runs with its default settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np

from difforge.artifact.manifest import ComponentEntry, Manifest
from difforge.errors import DifforgeError
from difforge.runtime.runners import register_runner
from difforge.runtime.runners._ort_binding import binding_device, run_bound
from difforge.runtime.runners._ort_settings import (
    providers,
    recorded_settings,
    requested_providers,
    session_options,
    user_settings,
)
from difforge.runtime.runners.base import Runner


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _schemas() -> dict[tuple[str, str], int] | None:
    """(domain, op) -> the lowest opset version that defines it in this ONNX Runtime (None
    where the build does not expose its schemas)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as core

    if not hasattr(core, "get_all_operator_schema"):
        return None
    out: dict[tuple[str, str], int] = {}
    for schema in core.get_all_operator_schema():
        key = (schema.domain or "ai.onnx", schema.name)
        out[key] = min(out.get(key, schema.since_version), schema.since_version)
    return out


def _missing(needs: list[dict[str, Any]], schemas: dict[tuple[str, str], int]) -> list[str]:
    newest = max(v for (d, _), v in schemas.items() if d == "ai.onnx")
    missing: list[str] = []
    for need in needs:
        opsets = {str(k): int(v) for k, v in dict(need.get("opsets", {})).items()}
        if opsets.get("ai.onnx", 0) > newest:
            missing.append(f"ONNX opset {opsets['ai.onnx']} (it knows up to {newest})")
        for op in need.get("ops", []):
            domain, _, name = str(op).partition("::")
            since = schemas.get((domain, name))
            if since is None or since > opsets.get(domain, 1):
                missing.append(f"{op} (opset {opsets.get(domain, 1)})")
    return sorted(set(missing))


@register_runner
class OrtRunner(Runner):
    """Runs an ONNX file with an ONNX Runtime session built from recorded settings."""

    backend = "ort"

    def __init__(
        self,
        name: str,
        spec: ComponentEntry,
        path: Path,
        settings: dict[str, Any] | None = None,
        providers: list[str] | None = None,
        io_binding: bool | None = None,
    ) -> None:
        super().__init__(name, spec)
        self.path = path
        self.settings = dict(settings or {})
        self.providers = providers or ["CPUExecutionProvider"]
        #: calls through I/O binding (carried state left on the device); by default where
        #: the session runs on a GPU provider
        self.device = binding_device(self.providers)
        self.io_binding = self.device == "cuda" if io_binding is None else io_binding
        self.session: Any = None

    @classmethod
    def check_artifact(cls, manifest: Manifest) -> None:
        """Refuse an artifact this ONNX Runtime cannot run, judged by what its graphs need.

        Each engine records the opsets its graph imports and the ops it uses (contrib ops and
        fusions included); they are looked up in this ONNX Runtime's own operator schemas, so
        an older runtime that has them all (a Jetson's, which lags behind) runs the artifact.
        An artifact without that record falls back to the version rule: one built by a newer
        minor version is refused.
        """
        import onnxruntime as ort

        needs = [
            c.engine.requires
            for c in manifest.components.values()
            if c.engine is not None and c.engine.backend == cls.backend
        ]
        schemas = _schemas()
        if needs and all(n is not None for n in needs) and schemas is not None:
            missing = _missing(cast(list[dict[str, Any]], needs), schemas)
            if missing:
                more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
                shown = ", ".join(missing[:4]) + more
                raise DifforgeError(
                    f"this artifact needs {shown}, which onnxruntime {ort.__version__} does not "
                    "have; upgrade onnxruntime or build the artifact again with this one"
                )
            return
        built_with = manifest.versions.get("onnxruntime")
        if built_with and _version_tuple(ort.__version__)[:2] < _version_tuple(built_with)[:2]:
            raise DifforgeError(
                f"artifact was built with onnxruntime {built_with}, but {ort.__version__} is "
                f"installed; upgrade onnxruntime or rebuild the artifact"
            )

    @classmethod
    def from_artifact(
        cls, name: str, spec: ComponentEntry, root: Path, overrides: dict[str, Any]
    ) -> OrtRunner:
        recorded = dict(spec.engine.settings) if spec.engine is not None else {}
        where = f"components.{name}.engine.settings"
        settings, notes = recorded_settings(recorded, where)
        requested = overrides.get("providers")
        binding = overrides.get("io_binding")
        if binding is not None and not isinstance(binding, bool):
            raise DifforgeError(f"io_binding must be true or false, got {binding!r}")
        rest = {k: v for k, v in overrides.items() if k not in ("providers", "io_binding")}
        settings.update(user_settings(rest))
        chosen = requested_providers(requested) if requested else providers(recorded, where)
        runner = cls(name, spec, root / spec.file, settings, chosen, binding)
        runner.notes.extend(notes)
        return runner

    def _activate(self) -> None:
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(
                str(self.path),
                sess_options=session_options(self.settings),
                providers=self.providers,
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DifforgeError(f"cannot load {self.path.name} ({self.name}): {first}") from exc
        self._output_names = [o.name for o in self.session.get_outputs()]

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            if self.io_binding:
                return run_bound(
                    self.session, feeds, self._output_names, self.carried_outputs, self.device
                )
            outputs = self.session.run(self._output_names, feeds)
        except Exception as exc:  # onnxruntime's errors are untyped (Fail, InvalidArgument, ...)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DifforgeError(f"{self.name}: ONNX Runtime failed while running: {first}") from exc
        return dict(zip(self._output_names, outputs, strict=True))

    def end_profiling(self) -> str | None:
        """Stop ONNX Runtime's profiler, returning its JSON trace path if profiling was on."""
        if self.session is None or not self.settings.get("profile_prefix"):
            return None
        return str(self.session.end_profiling())
