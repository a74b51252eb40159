"""What every engine builder does, so that a backend writes only its per-component build.

:meth:`EngineBuilder.build` reads the export folder's manifest (hashes checked), refuses a
folder that is not an export, stages the new artifact in a hidden folder, copies the files no
component owns (tokenizer), builds each component with the backend's
:meth:`EngineBuilder.build_component`, stores the weights of a stepped denoiser's variants once
again, records each component's engine (backend, files, settings, custom ops, passes) and
writes the manifest. The staged folder becomes the output only if all of it succeeds.
"""

from __future__ import annotations

import datetime as dt
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from difforge._progress import Reporter, SilentReporter
from difforge.artifact.calibration import FOLDER as CALIBRATION_FOLDER
from difforge.artifact.calibration import CalibrationData
from difforge.artifact.manifest import (
    ComponentEntry,
    EngineRecord,
    Manifest,
    PassRecord,
    Stage,
    read_manifest,
    write_manifest,
)
from difforge.artifact.staging import check_target, staged_folder
from difforge.artifact.weights import custom_ops_in, graph_files, share_weights
from difforge.calib.gates import Run, onnx_run
from difforge.calib.int8 import check_method
from difforge.calib.lower import Int8Writer, LowerResult, LowerSettings, lower_graph
from difforge.calib.precision import component_precisions
from difforge.config import BuildConfig
from difforge.errors import DifforgeError
from difforge.versions import library_versions

#: ``--custom-ops`` values: keep difforge's custom-op nodes for a plugin, or inline their
#: standard-op bodies
CUSTOM_OP_CHOICES = ("plugin", "inline")


@dataclass
class ComponentBuild:
    """One component's build, as the backend did it (the base records the rest; a backend
    whose engines are not ONNX graphs also says which files they are and which custom ops they
    hold as plugin nodes)."""

    settings: dict[str, Any] = field(default_factory=dict)
    passes: list[PassRecord] = field(default_factory=list)
    check: dict[str, float] | None = None
    files: list[str] = field(default_factory=list)
    plugin_ops: list[str] = field(default_factory=list)
    #: a lowered precision: what was lowered and what its gate measured
    quality: dict[str, Any] | None = None
    #: what the built graph needs of its runtime (opsets and ops), when the backend says
    requires: dict[str, Any] | None = None


class EngineBuilder(ABC):
    """Subclasses set ``backend`` (and ``default_custom_ops``) and write
    :meth:`build_component`; :meth:`check_config` refuses bad settings before any work."""

    backend: ClassVar[str] = ""
    #: what becomes of difforge's custom ops unless the build says otherwise
    default_custom_ops: ClassVar[str] = "inline"
    #: whether built components are ONNX graphs (their variants' weights are then re-shared)
    writes_onnx: ClassVar[bool] = True
    #: the precisions this backend builds
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)

    def __init__(self, config: BuildConfig, reporter: Reporter | None = None) -> None:
        self.config = config
        self.rep = reporter or SilentReporter()
        self.custom_ops = config.custom_ops or self.default_custom_ops
        self._precisions: dict[str, str] = {}
        self.calibration: CalibrationData | None = None
        if self.custom_ops not in CUSTOM_OP_CHOICES:
            raise DifforgeError(
                f"--custom-ops takes {' or '.join(CUSTOM_OP_CHOICES)}, got {self.custom_ops!r}"
            )

    def check_config(self) -> None:
        """Refuse settings this backend cannot honour (called before any work)."""
        if self.config.threads < 0:
            raise DifforgeError(
                f"--threads must be 0 (all cores) or more, got {self.config.threads}"
            )
        precision = self.config.precision
        for role, value in precision.roles.items():
            if value not in self.precisions:
                raise DifforgeError(
                    f"the {self.backend} backend cannot build {value} engines ({role}); it "
                    f"builds {', '.join(self.precisions)}{self._precision_hint(value)}"
                )
        if not 0.0 < precision.min_cosine <= 1.0:
            raise DifforgeError(f"--min-cosine must be in (0, 1], got {precision.min_cosine}")
        check_method(precision.calib_method)

    @staticmethod
    def _precision_hint(value: str) -> str:
        from difforge.engines import available_backends, builder_class

        able = [b for b in available_backends() if value in builder_class(b).precisions]
        return f" (for {value}: --backend {' or '.join(able)})" if able else ""

    def int8_writer(self) -> Int8Writer | None:
        """This backend's own INT8 quantizer, if it has one; else the Q/DQ graph of ONNX
        Runtime's tools (what ONNX Runtime and TensorRT build)."""
        return None

    def precision_of(self, key: str) -> str:
        """The precision component ``key`` is built in (set by :meth:`build`)."""
        return self._precisions.get(key, "fp32")

    def lower(
        self, key: str, src: Path, graph: Path, out: Path, finish: Callable[[Path], Run]
    ) -> LowerResult:
        """Lower the fp32 ``graph`` of component ``key`` to its precision at ``out``; the gate
        compares ``finish(out)`` against the exported graph ``src`` on ONNX Runtime."""
        precision = self.config.precision
        settings = LowerSettings(
            method=precision.calib_method,
            min_cosine=precision.min_cosine,
            gate=precision.gate,
            sensitivity=precision.sensitivity,
            int8_writer=self.int8_writer(),
        )
        value = self.precision_of(key)
        with self.rep.task(f"lower {key} to {value}"):
            result = lower_graph(
                key, value, graph, out, self.calibration, onnx_run(str(src)), finish, settings
            )
        gate = result.gate
        passed = f"gate {gate.describe()}" if gate is not None else "no gate (--no-gate)"
        kept = f"; kept in fp32: {', '.join(result.kept_fp32)}" if result.kept_fp32 else ""
        self.rep.note(f"{key}: {value}, {result.lowered} nodes lowered; {passed}{kept}")
        return result

    @abstractmethod
    def build_component(
        self, role: str, entry: ComponentEntry, src: Path, dst: Path
    ) -> ComponentBuild:
        """Build the exported graph ``src`` of component ``role`` into ``dst`` (a path in the
        staged artifact, with ``entry.file``'s name)."""

    def build(self) -> Path:
        config = self.config
        manifest = read_manifest(config.source, verify=True)
        if manifest.stage is Stage.BUILT:
            raise DifforgeError(
                f"{config.source} is already a built artifact; build from an export folder"
            )
        self.check_config()
        roles = {key: entry.role for key, entry in manifest.components.items()}
        self._precisions = component_precisions(config.precision.roles, roles, roles)
        self.calibration = (
            CalibrationData(config.source, manifest.calibration)
            if manifest.calibration is not None
            else None
        )
        check_target(config.output, config.force)
        with staged_folder(config.output, config.force) as staging:
            self._copy_unowned(manifest, config.source, staging)
            builds: dict[str, ComponentBuild] = {}
            for role, entry in manifest.components.items():
                builds[role] = self.build_component(
                    role, entry, config.source / entry.file, staging / entry.file
                )
            if self.writes_onnx:
                self._reshare_variant_weights(manifest, staging)
            for role, entry in manifest.components.items():
                entry.engine = self._record(entry, builds[role], config.source, staging)
                entry.precision = self.precision_of(role)
                if not self.writes_onnx:  # the component's file is now its engine's first
                    entry.file = builds[role].files[0]
            manifest.stage = Stage.BUILT
            manifest.calibration = None  # measured into each engine record; not shipped
            manifest.created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            manifest.versions = {**manifest.versions, **library_versions()}
            write_manifest(staging, manifest)
        return config.output

    def _record(
        self, entry: ComponentEntry, done: ComponentBuild, source: Path, staging: Path
    ) -> EngineRecord:
        exported = custom_ops_in(source / entry.file)
        if self.writes_onnx:
            files = graph_files(staging / entry.file, staging)
            kept = custom_ops_in(staging / entry.file)
        else:
            files, kept = list(done.files), list(done.plugin_ops)
        return EngineRecord(
            backend=self.backend,
            files=files,
            settings=done.settings,
            custom_ops={op: "plugin" if op in kept else "inlined" for op in exported},
            passes=list(done.passes),
            check=done.check,
            quality=done.quality,
            requires=done.requires,
        )

    @staticmethod
    def _copy_unowned(manifest: Manifest, source: Path, staging: Path) -> None:
        """Copy the files no component graph owns (tokenizer files, shared weights); not the
        calibration data, which the built artifact does not carry."""
        for rel in manifest.files:
            if rel.startswith(f"{CALIBRATION_FOLDER}/"):
                continue
            owned = any(
                rel == c.file or rel.startswith(c.file + ".") for c in manifest.components.values()
            )
            if not owned:
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / rel, staging / rel)

    @staticmethod
    def _reshare_variant_weights(manifest: Manifest, root: Path) -> None:
        """Building graphs one by one inlines their weights again; store them once more."""
        keys = list(manifest.plan.variants.values())
        if len(keys) > 1:
            share_weights([root / manifest.components[key].file for key in keys])
