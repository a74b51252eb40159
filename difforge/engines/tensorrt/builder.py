"""TensorRT engines: one serialized engine per component (each step variant its own), built
with one optimization profile per resolution bucket, reused from the content-addressed engine
cache when the same graph was built for the same GPU and TensorRT before.

A lowered precision (fp16, int8) is lowered in the graph first, by difforge's own lowering
and behind its quality gate on ONNX Runtime (casts, Q/DQ nodes): that graph is what a strongly
typed TensorRT 11 build needs, and a weakly typed TensorRT 10 build gets it with the matching
builder flag as well. What this builder does not do yet, plainly: difforge's custom ops are
inlined (their TensorRT plugins are not written yet), and no runner runs its engines (an
artifact built here is refused by the runtime until one exists). The calls into TensorRT are
in :mod:`.trt_api`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from difforge.artifact.manifest import ComponentEntry
from difforge.calib.gates import onnx_run
from difforge.engines import register_builder
from difforge.engines.base import ComponentBuild, EngineBuilder
from difforge.engines.ort.builder import optimize_graph
from difforge.engines.tensorrt import trt_api
from difforge.engines.tensorrt.cache import EngineCache, EngineKey, sha256_files
from difforge.engines.tensorrt.profiles import profiles_for
from difforge.errors import DifforgeError
from difforge.passes import get_pass


@register_builder
class TensorRTBuilder(EngineBuilder):
    backend = "tensorrt"
    writes_onnx = False
    precisions = ("fp32", "fp16", "int8")

    def check_config(self) -> None:
        super().check_config()
        if self.custom_ops == "plugin":
            raise DifforgeError(
                "--custom-ops plugin: difforge's TensorRT plugins are not written yet; build with "
                "--custom-ops inline (their standard-op bodies)"
            )
        self.trt, self.loaders = trt_api.load()
        self.device = trt_api.device()
        self.cache = EngineCache()
        try:  # TensorRT writes its timing cache there before the first engine is stored
            self.cache.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DifforgeError(f"cannot create the engine cache {self.cache.root}: "
                                f"{exc.strerror or exc}") from None

    def build_component(
        self, role: str, entry: ComponentEntry, src: Path, dst: Path
    ) -> ComponentBuild:
        caps = trt_api.capabilities(self.trt)
        profiles = profiles_for(entry)
        plan_path = dst.with_suffix(".plan")
        plan_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
            graph = Path(tmp) / "fp32" / src.name
            # the custom ops' standard-op bodies in place of their nodes, constants folded
            optimize_graph(src, graph, [get_pass("inline_functions"), get_pass("fold_constants")])
            quality = None
            if self.precision_of(role) != "fp32":
                lowered = Path(tmp) / "lowered" / src.name
                lowered.parent.mkdir()
                result = self.lower(role, src, graph, lowered, lambda p: onnx_run(str(p)))
                graph, quality = lowered, result.record()
            key = EngineKey(
                onnx_sha256=sha256_files(sorted(graph.parent.iterdir())),
                precision=self.precision_of(role),
                profiles=json.dumps([p.to_dict() for p in profiles], sort_keys=True),
                tensorrt=caps.version,
                compute_capability=self.device.compute_capability,
            )
            cached = self.cache.get(key)
            reused = cached is not None
            if cached is None:
                with self.rep.task(f"build {role} with TensorRT {caps.version}"):
                    request = trt_api.EngineRequest(
                        graph, key.precision, profiles,
                        timing_cache=self.cache.root / "timing.cache",
                    )
                    built = trt_api.build_engine(self.trt, self.loaders, request)
                plan, settings = built.plan, built.settings
                self.cache.put(key, plan, settings)
            else:
                self.rep.note(f"{role}: engine reused from the cache ({key.digest()})")
                plan, settings = cached
        plan_path.write_bytes(plan)
        settings = {
            **settings,
            "compute_capability": self.device.compute_capability,
            "device": self.device.name,
            "cache_key": key.digest(),
            "reused": reused,
            "buckets": [list(p.bucket) for p in profiles],
        }
        rel = Path(entry.file).with_suffix(".plan").as_posix()
        return ComponentBuild(settings=settings, files=[rel], quality=quality)
