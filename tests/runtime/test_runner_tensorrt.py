"""The TensorRT runner against a recording stand-in for TensorRT and Polygraphy (neither can
be installed here): the digits U-Net built for two resolution buckets by the TensorRT builder
(its own recording fakes), then run by the runtime. The stand-in's "engine" runs the exported
ONNX graph on ONNX Runtime, so the runner's plumbing (plan bytes, profile per bucket, feeds,
outputs) is checked by the image it makes: the export folder's own, byte for byte."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from difforge import BuildConfig, ExportConfig, ResolutionRange, build, export
from difforge.artifact.engine_fit import Device
from difforge.engines.tensorrt import trt_api
from difforge.errors import DifforgeError
from difforge.reference.folders import MODELS_DIR
from difforge.runtime import GenerateRequest, load
from difforge.runtime.runners.tensorrt import TensorRTRunner, TrtCalls
from tests.engines.test_tensorrt import TRT10, RecordingLoaders

pytestmark = pytest.mark.slow


class StandIn:
    """Polygraphy's TensorRT backend as the runner calls it, recording; an "engine" runs the
    export's graph on ONNX Runtime."""

    def __init__(self, graph: Path) -> None:
        self.graph = graph
        self.calls: list[tuple[Any, ...]] = []

    def EngineFromBytes(self, serialized_engine: bytes) -> Any:
        self.calls.append(("engine_from_bytes", serialized_engine[:4]))
        return lambda: "engine"

    def TrtRunner(self, engine: Any) -> Any:
        import onnxruntime as ort

        calls, graph = self.calls, self.graph
        calls.append(("runner", engine))

        class Runner:
            def activate(self) -> None:
                calls.append(("activate",))
                self.session = ort.InferenceSession(str(graph))

            def set_profile(self, index: int) -> None:
                calls.append(("set_profile", index))

            def infer(self, feed_dict: dict[str, Any]) -> dict[str, Any]:
                calls.append(("infer", {k: v.shape for k, v in feed_dict.items()}))
                names = [o.name for o in self.session.get_outputs()]
                return dict(zip(names, self.session.run(names, feed_dict), strict=True))

        return Runner()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("trt")
    source = export(ExportConfig(output=root / "export", model=MODELS_DIR / "digits-unet",
                                 resolution=ResolutionRange(min=16, default=32, max=64)))
    monkey = pytest.MonkeyPatch()
    monkey.setenv("DIFFORGE_ENGINE_CACHE", str(root / "cache"))
    monkey.setattr(trt_api, "device", lambda: Device("Orin (fake)", "8.7"))
    monkey.setattr(trt_api, "load", lambda: (TRT10, RecordingLoaders()))
    try:
        art = build(BuildConfig(source=source, output=root / "trt", backend="tensorrt"))
    finally:
        monkey.undo()
    return source, art


def stand_in(monkeypatch: pytest.MonkeyPatch, source: Path, version: str = "10.3.0",
             capability: str = "8.7") -> StandIn:
    fake = StandIn(source / "denoiser" / "model.onnx")
    calls = TrtCalls(version, fake, Device("Orin (fake)", capability))
    monkeypatch.setattr(TensorRTRunner, "calls", staticmethod(lambda: calls))
    return fake


def test_the_runner_makes_the_exports_image(
    built: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    source, art = built
    fake = stand_in(monkeypatch, source)
    pipe = load(art)
    runner = pipe.runners["denoiser"]
    assert isinstance(runner, TensorRTRunner) and len(runner.buckets) == 2, runner.buckets
    assert [c[0] for c in fake.calls] == ["engine_from_bytes", "runner", "activate"]
    assert fake.calls[0][1] == b"PLAN"  # the plan file's bytes, as the build wrote them
    for size in (32, 64):
        request = GenerateRequest(class_label=[1, 7], seed=3, steps=4, height=size, width=size)
        got = pipe(request).images
        assert np.array_equal(got, load(source)(request).images)
    profiles = [c[1] for c in fake.calls if c[0] == "set_profile"]
    assert profiles == [1]  # 32 px is the first bucket's (profile 0), 64 the second's
    shapes = [c[1]["sample"] for c in fake.calls if c[0] == "infer"]
    assert shapes[0] == (2, 1, 32, 32) and shapes[-1] == (2, 1, 64, 64)


@pytest.mark.parametrize(("version", "capability"), [("10.3.0", "9.0"), ("11.1.0", "8.7")])
def test_an_engine_for_another_gpu_or_tensorrt_is_refused(
    built: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, version: str, capability: str
) -> None:
    source, art = built
    fake = stand_in(monkeypatch, source, version, capability)
    with pytest.raises(DifforgeError, match=r"denoiser: this engine was built with TensorRT "
                       r"10\.3\.0 for compute capability 8\.7"):
        load(art)
    assert fake.calls == []  # refused before any engine was read


def test_provider_options_do_not_apply(
    built: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    source, art = built
    stand_in(monkeypatch, source)
    with pytest.raises(DifforgeError, match="--device/--provider does not apply to TensorRT"):
        load(art, providers=["CPUExecutionProvider"])
    with pytest.raises(DifforgeError, match="--threads does not apply to TensorRT"):
        load(art, threads=1)


def test_without_tensorrt_one_line(built: tuple[Path, Path]) -> None:
    with pytest.raises(DifforgeError, match="TensorRT's Python module is not importable"):
        load(built[1])
