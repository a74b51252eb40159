"""OpenVINO runner: the only place the runtime touches OpenVINO's API.

It imports the compiled blob the build exported when this machine matches the one that built
it (same OpenVINO, CPU and capabilities): a load without compiling. Otherwise it compiles the
IR, with a note. An artifact whose inference precision this CPU cannot run (bf16 without
AVX512-BF16 or AMX, say) is refused: OpenVINO would otherwise run it in fp32 without a word.
Settings are an allow-list, checked like ONNX Runtime's. With profiling on (the profiler's
``profile_prefix`` override, as for ONNX Runtime) OpenVINO's per-node counters are kept after
each call (:attr:`OpenVinoRunner.calls`): the execution graph's node names, op types, the
kernel that ran (``brgconv_avx2_I8``, ``jit_avx2_f32``) and its time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from difforge.artifact.files import check_relative, inside
from difforge.artifact.manifest import ComponentEntry, Manifest
from difforge.errors import DifforgeError
from difforge.runtime.runners import register_runner
from difforge.runtime.runners._ort_settings import machine_cores
from difforge.runtime.runners.base import Runner

PRECISION_HINTS = {"f32": "FP32", "bf16": "BF16", "f16": "FP16"}
_KEYS = ("device", "inference_precision", "threads", "blob", "blob_for")


def _core() -> Any:
    import openvino as ov

    return ov.Core()


def _machine(core: Any) -> dict[str, Any]:
    import openvino as ov

    return {
        "openvino": ov.get_version(),
        "cpu": str(core.get_property("CPU", "FULL_DEVICE_NAME")),
        "capabilities": [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")],
    }


def checked_settings(settings: dict[str, Any], where: str) -> dict[str, Any]:
    for key in settings:
        if key not in _KEYS:
            raise DifforgeError(
                f"manifest.json: {where}.{key}: not a setting an artifact may record"
            )
    if settings.get("device") != "CPU":
        raise DifforgeError(f"manifest.json: {where}.device: only CPU engines are built")
    if settings.get("inference_precision") not in PRECISION_HINTS:
        raise DifforgeError(
            f"manifest.json: {where}.inference_precision: expected one of "
            f"{', '.join(PRECISION_HINTS)}"
        )
    threads = settings.get("threads", 0)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise DifforgeError(f"manifest.json: {where}.threads: expected a thread count")
    blob = settings.get("blob")
    if blob is not None and (not isinstance(blob, str) or "/" in blob):
        raise DifforgeError(f"manifest.json: {where}.blob: expected a file name")
    if not isinstance(settings.get("blob_for", {}), dict):
        raise DifforgeError(f"manifest.json: {where}.blob_for: expected an object")
    return dict(settings)


@dataclass
class ProfiledCall:
    """One profiled call: its wall time, and (node, op type, kernel, seconds) per executed
    node of OpenVINO's execution graph."""

    wall_s: float
    nodes: list[tuple[str, str, str, float]] = field(default_factory=list)


@register_runner
class OpenVinoRunner(Runner):
    """Runs an OpenVINO IR (or its compiled blob) on the CPU."""

    backend = "openvino"

    def __init__(self, name: str, spec: ComponentEntry, xml: Path, settings: dict[str, Any]):
        super().__init__(name, spec)
        self.xml = xml
        self.settings = settings
        self.request: Any = None
        self.compiled_here = False
        self.profiling = False
        #: with profiling on, one record per call since loading
        self.calls: list[ProfiledCall] = []

    @classmethod
    def check_artifact(cls, manifest: Manifest) -> None:
        core = _core()
        have = _machine(core)["capabilities"]
        for key, entry in manifest.components.items():
            if entry.engine is None or entry.engine.backend != cls.backend:
                continue
            hint = entry.engine.settings.get("inference_precision")
            need = PRECISION_HINTS.get(str(hint))
            if need is not None and need not in have:
                raise DifforgeError(
                    f"{key} is a {entry.precision} engine, which this CPU cannot run in "
                    f"OpenVINO (it reports {', '.join(have)}); rebuild it in another precision"
                )

    @classmethod
    def from_artifact(
        cls, name: str, spec: ComponentEntry, root: Path, overrides: dict[str, Any]
    ) -> OpenVinoRunner:
        assert spec.engine is not None  # the loader picks this runner from the engine record
        where = f"components.{name}.engine.settings"
        settings = checked_settings(dict(spec.engine.settings), where)
        runner = cls(name, spec, inside(root, check_relative(spec.file, where)), settings)
        cores = machine_cores()
        for key, value in overrides.items():
            if key == "profile_prefix":  # OpenVINO's counters stay in memory: no file
                runner.profiling = bool(value)
                continue
            if key == "providers":
                raise DifforgeError(
                    "--device/--provider choose ONNX Runtime's execution providers; this "
                    "artifact's engines are OpenVINO's (they run on its CPU device)"
                )
            if key != "intra_op_num_threads":
                raise DifforgeError(f"the OpenVINO runner has no setting {key!r}")
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= cores:
                raise DifforgeError(f"--threads must be in [0, {cores}], got {value!r}")
            settings["threads"] = value
        if settings["threads"] > cores:
            runner.notes.append(
                f"the artifact asks for {settings['threads']} threads; this machine has "
                f"{cores} cores, so {cores} are used"
            )
            settings["threads"] = cores
        return runner

    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": self.settings["inference_precision"],
            "PERFORMANCE_HINT": "LATENCY",
        }
        if self.settings.get("threads"):
            config["INFERENCE_NUM_THREADS"] = int(self.settings["threads"])
        if self.profiling:
            config["PERF_COUNT"] = True
        return config

    def _activate(self) -> None:
        core = _core()
        blob = self.settings.get("blob")
        compiled = None
        try:
            if blob and self.settings.get("blob_for") == _machine(core):
                data = (self.xml.parent / blob).read_bytes()
                compiled = core.import_model(data, "CPU", self._config())
            if compiled is None:
                self.compiled_here = True
                if blob:
                    self.notes.append(
                        "the compiled OpenVINO blobs were made for another CPU or OpenVINO "
                        "version; compiling from the IR"
                    )
                compiled = core.compile_model(core.read_model(str(self.xml)), "CPU", self._config())
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DifforgeError(f"cannot load {self.xml.name} ({self.name}): {first}") from exc
        self.request = compiled.create_infer_request()
        self._outputs = [t.name for t in self.spec.outputs]

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            start = time.perf_counter()
            self.request.infer(feeds)
            wall = time.perf_counter() - start
            outputs = {n: np.array(self.request.get_tensor(n).data) for n in self._outputs}
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DifforgeError(f"{self.name}: OpenVINO failed while running: {first}") from exc
        if self.profiling:
            self.calls.append(self._counters(wall))
        return outputs

    def _counters(self, wall: float) -> ProfiledCall:
        import openvino as ov

        executed = ov.ProfilingInfo.Status.EXECUTED
        return ProfiledCall(
            wall,
            [
                (i.node_name, i.node_type, i.exec_type, i.real_time.total_seconds())
                for i in self.request.profiling_info
                if i.status == executed
            ],
        )
