"""Backends by name: a builder package and a runner module each, found without edits elsewhere."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from difforge import BuildConfig, build
from difforge.artifact.manifest import ComponentEntry, read_manifest
from difforge.engines import available_backends, builder_class, register_builder
from difforge.engines.base import ComponentBuild, EngineBuilder
from difforge.errors import DifforgeError
from difforge.runtime import GenerateRequest, load
from difforge.runtime.runners import available_runners, register_runner, runner_class
from difforge.runtime.runners.base import Runner


def test_backends_and_runners_are_found_by_name() -> None:
    assert available_backends() == ["openvino", "ort", "tensorrt"]
    assert available_runners() == ["openvino", "ort", "tensorrt"]
    for name in ("ort", "openvino", "tensorrt"):
        assert builder_class(name).backend == name
        assert runner_class(name).backend == name
    with pytest.raises(
        DifforgeError, match=r"unknown backend 'trt' \(known: openvino, ort, tensorrt\)"
    ):
        builder_class("trt")
    with pytest.raises(
        DifforgeError, match=r"no runner for 'tpu' engines \(it runs: openvino, ort, tensorrt\)"
    ):
        runner_class("tpu")


def test_an_artifact_of_an_unknown_backend_is_refused(
    tiny_sd_artifact: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "art"
    shutil.copytree(tiny_sd_artifact, copy)
    data = json.loads((copy / "manifest.json").read_text())
    data["components"]["denoiser"]["engine"]["backend"] = "tpu"
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(DifforgeError, match="no runner for 'tpu' engines"):
        load(copy)


class CopyBuilder(EngineBuilder):
    """A backend in a few lines: copies each graph, records a setting."""

    backend = "copy-test"

    def build_component(
        self, role: str, entry: ComponentEntry, src: Path, dst: Path
    ) -> ComponentBuild:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        return ComponentBuild(settings={"copied": True})


class CopyRunner(Runner):
    backend = "copy-test"
    made: ClassVar[list[str]] = []

    @classmethod
    def from_artifact(
        cls, name: str, spec: ComponentEntry, root: Path, overrides: dict[str, Any]
    ) -> Runner:
        assert spec.engine is not None and spec.engine.settings == {"copied": True}
        cls.made.append(name)
        return cls(name, spec, root / spec.file)

    def __init__(self, name: str, spec: ComponentEntry, path: Path) -> None:
        super().__init__(name, spec)
        self.path = path

    def _activate(self) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, feeds), strict=True))


@pytest.fixture
def copy_backend() -> Iterator[None]:
    from difforge import engines
    from difforge.runtime import runners

    register_builder(CopyBuilder)
    register_runner(CopyRunner)
    try:
        yield
    finally:
        engines._REGISTRY.pop("copy-test")
        runners._REGISTRY.pop("copy-test")


def test_a_new_backend_needs_only_a_builder_and_a_runner(
    copy_backend: None, tiny_sd_export: Path, tmp_path: Path
) -> None:
    out = build(BuildConfig(source=tiny_sd_export, output=tmp_path / "art", backend="copy-test"))
    manifest = read_manifest(out)
    assert {e.engine.backend for e in manifest.components.values() if e.engine} == {"copy-test"}
    pipe = load(out)
    assert sorted(CopyRunner.made) == sorted(manifest.components)
    request = GenerateRequest(prompt="a cat", steps=2, seed=0)
    image = pipe(request).images
    # the export folder itself, run by the ORT runner with default settings: the same graphs
    np.testing.assert_array_equal(image, load(tiny_sd_export)(request).images)


def test_registering_a_backend_twice_is_an_error() -> None:
    class Other(CopyBuilder):
        backend = "ort"

    with pytest.raises(ValueError, match="registered twice"):
        register_builder(Other)
