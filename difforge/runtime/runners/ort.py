"""ONNX Runtime runner: the only place the runtime touches onnxruntime's session API.

It also runs export folders (components with no engine record yet): their graphs are plain
ONNX, which ONNX Runtime runs with its default settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from difforge.artifact.manifest import ComponentEntry, Manifest
from difforge.errors import DifforgeError
from difforge.runtime.runners import register_runner
from difforge.runtime.runners._ort_settings import (
    providers,
    recorded_settings,
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
    ) -> None:
        super().__init__(name, spec)
        self.path = path
        self.settings = dict(settings or {})
        self.providers = providers or ["CPUExecutionProvider"]
        self.session: Any = None

    @classmethod
    def check_artifact(cls, manifest: Manifest) -> None:
        """Refuse an engine built by a newer ONNX Runtime than the one installed here.

        An optimised graph may use contrib ops or fusions an older runtime does not know; an
        older build on a newer runtime is fine (ONNX Runtime is backward compatible).
        """
        import onnxruntime as ort

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
        settings.update(user_settings(overrides))
        runner = cls(name, spec, root / spec.file, settings, providers(recorded, where))
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
