"""The TensorRT backend on a machine without TensorRT: optimization profiles from real exports,
the engine cache and its refusals, and the exact calls the thin TensorRT module makes, checked
against recording fakes of a TensorRT 10 (weakly typed) and a TensorRT 11 (strongly typed)
module. Nothing here runs TensorRT itself (it cannot be installed on these machines)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from difforge import BuildConfig, build
from difforge.artifact.dims import shape_of
from difforge.artifact.manifest import read_manifest
from difforge.engines.tensorrt import trt_api
from difforge.engines.tensorrt.cache import EngineCache, EngineKey, check_engine_fits
from difforge.engines.tensorrt.profiles import buckets, profile_for, profiles_for
from difforge.errors import DifforgeError
from difforge.runtime import load
from tests.cli.test_errors import assert_user_error, difforge


class _Flags10:  # TensorRT 10.x keeps the weak-typing precision flags
    FP16, BF16, INT8 = "FP16", "BF16", "INT8"


class _Flags11:  # TensorRT 11 removed them
    pass


class FakeTrt:
    def __init__(self, version: str, flags: type) -> None:
        self.__version__ = version
        self.BuilderFlag = flags


TRT10 = FakeTrt("10.3.0", _Flags10)
TRT11 = FakeTrt("11.1.0", _Flags11)


class RecordingLoaders:
    """Polygraphy's TensorRT loaders, recording every call; the "engine" names its graph."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def NetworkFromOnnxPath(self, path: str, *, strongly_typed: bool | None = None) -> Any:
        graph = onnx.load(path, load_external_data=False)
        ops = sorted({f"{n.domain}::{n.op_type}" for n in graph.graph.node if n.domain})
        self.calls.append(("network", Path(path).name, strongly_typed, ops))
        return ("network", path)

    def Profile(self) -> Any:
        calls = self.calls

        class Profile:
            def add(self, name: str, min: Any, opt: Any, max: Any) -> Any:
                calls.append(("profile.add", name, tuple(min), tuple(opt), tuple(max)))
                return self

        calls.append(("profile",))
        return Profile()

    def CreateConfig(self, **settings: Any) -> Any:
        shown = {k: v for k, v in settings.items() if k != "profiles"}
        self.calls.append(("config", len(settings["profiles"]), shown))
        return "config"

    def EngineBytesFromNetwork(
        self, network: Any, *, config: Any, save_timing_cache: str | None = None
    ) -> Callable[[], bytes]:
        self.calls.append(("engine", config, save_timing_cache is not None))
        return lambda: f"PLAN {Path(network[1]).name}".encode()


def _kinds(calls: list[tuple[Any, ...]]) -> list[str]:
    return [c[0] for c in calls if c[0] != "profile.add"]


# ---------------------------------------------------------------- the thin module


@pytest.mark.parametrize(
    ("trt", "precision", "network_flag", "flags"),
    [
        (TRT10, "fp16", None, {"fp16": True}),
        (TRT10, "int8", None, {"int8": True}),
        (TRT10, "fp32", None, {}),
        (TRT11, "fp16", True, {}),  # strongly typed: the graph's casts say it, no flag
        (TRT11, "int8", True, {}),
    ],
)
def test_build_calls_by_capability(
    tmp_path: Path, trt: FakeTrt, precision: str, network_flag: bool | None, flags: dict[str, Any]
) -> None:
    graph = tmp_path / "model.onnx"
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])), str(graph))
    axes = {"batch": [1, 2, 4], "height": [16, 32, 64], "width": [16, 32, 64]}
    profile = profiles_for_entry({"sample": ("batch", 4, "height", "width")}, axes)
    loaders = RecordingLoaders()
    request = trt_api.EngineRequest(graph, precision, profile, timing_cache=tmp_path / "t.cache")
    built = trt_api.build_engine(trt, loaders, request)
    assert loaders.calls == [
        ("network", "model.onnx", network_flag, []),
        ("profile",),
        ("profile.add", "sample", (1, 4, 16, 16), (2, 4, 32, 32), (4, 4, 32, 32)),
        ("profile",),
        ("profile.add", "sample", (1, 4, 34, 34), (2, 4, 64, 64), (4, 4, 64, 64)),
        ("config", 2, {**flags, "load_timing_cache": str(tmp_path / "t.cache")}),
        ("engine", "config", True),
    ]
    assert built.plan == b"PLAN model.onnx"
    assert built.settings["typing"] == ("strong" if network_flag else "weak")
    assert built.settings["tensorrt"] == trt.__version__


def test_weight_streaming_needs_strong_typing(tmp_path: Path) -> None:
    request = trt_api.EngineRequest(tmp_path / "m.onnx", "fp32", [], weight_streaming=True)
    with pytest.raises(DifforgeError, match="weight streaming needs a strongly typed build"):
        trt_api.build_engine(TRT10, RecordingLoaders(), request)


def test_no_tensorrt_is_one_line(tmp_path: Path, tiny_sd_export: Path) -> None:
    result = difforge("build", str(tiny_sd_export), "-o", str(tmp_path / "b"), "--backend",
                      "tensorrt", "--custom-ops", "inline")
    assert_user_error(result, "needs TensorRT's Python module")
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------- profiles


def profiles_for_entry(inputs: dict[str, tuple[Any, ...]], axes: dict[str, list[int]]) -> Any:
    from difforge.artifact.manifest import ComponentEntry, TensorSpec

    entry = ComponentEntry(
        role="denoiser", file="denoiser/model.onnx",
        inputs=[TensorSpec(k, "float32", list(v)) for k, v in inputs.items()],
        outputs=[], axes=axes, tolerance=1e-4, multiples={"height": 2, "width": 2},
    )
    return profiles_for(entry)


def test_buckets_cover_the_range_at_most_twice_as_wide() -> None:
    got = buckets(16, 48, 192, multiple=8)
    assert got == [(16, 32, 32), (40, 48, 80), (88, 176, 176), (184, 192, 192)]
    assert all(hi <= 2 * lo and lo % 8 == 0 and hi % 8 == 0 for lo, _, hi in got)
    assert [b[0] for b in got[1:]] == [b[2] + 8 for b in got[:-1]]  # contiguous
    assert buckets(32, 32, 32) == [(32, 32, 32)]
    with pytest.raises(DifforgeError, match="bad axis range"):
        buckets(0, 1, 2)


def test_profiles_of_a_real_export(tiny_sd_export: Path) -> None:
    manifest = read_manifest(tiny_sd_export)
    entry = manifest.components["denoiser"]
    profiles = profiles_for(entry)
    lo, _, hi = entry.axes["height"]
    assert profiles[0].bucket[0] == lo and profiles[-1].bucket[1] == hi
    for profile in profiles:
        b_lo, b_hi = profile.bucket
        for tensor in entry.inputs:
            low, _, high = profile.shapes[tensor.name]
            for which, shape in (("min", low), ("max", high)):
                index = 0 if which == "min" else 2
                sizes = {k: v[index] for k, v in entry.axes.items()}
                sizes.update(height=b_lo if which == "min" else b_hi,
                             width=b_lo if which == "min" else b_hi)
                assert list(shape) == shape_of(tensor.shape, sizes)
        assert profile_for(profiles, b_hi) == profiles.index(profile)
    with pytest.raises(DifforgeError, match="no TensorRT profile covers"):
        profile_for(profiles, hi + 8)
    text = manifest.components["text_encoder"]
    assert [p.bucket for p in profiles_for(text)] == [(0, 0)]  # no spatial axes: one profile


# ---------------------------------------------------------------- the engine cache


def _key(**changes: Any) -> EngineKey:
    base = dict(onnx_sha256="a" * 64, precision="fp16", profiles="[]", tensorrt="10.3.0",
                compute_capability="8.7")
    return EngineKey(**(base | changes))


def test_cache_is_keyed_by_everything_an_engine_depends_on(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    cache.put(_key(), b"engine", {"typing": "weak", "flags": ["fp16"]})
    assert cache.get(_key()) == (b"engine", {"typing": "weak", "flags": ["fp16"]})
    for change in ({"compute_capability": "9.0"}, {"tensorrt": "11.1.0"}, {"precision": "int8"},
                   {"onnx_sha256": "b" * 64}, {"profiles": "[1]"}, {"plugins": ("la2d@1",)}):
        assert cache.get(_key(**change)) is None, change
    (entry,) = cache.entries()
    assert entry.key["compute_capability"] == "8.7" and entry.size == 6
    old = time.time() - 10 * 86400
    os.utime(tmp_path / entry.digest / "engine.plan", (old, old))
    (tmp_path / ".x.partial-1").mkdir()  # a build writing now: kept
    (tmp_path / ".y.partial-2").mkdir()  # a dead build's leftover: removed
    os.utime(tmp_path / ".y.partial-2", (old, old))
    assert [e.digest for e in cache.gc(older_than_days=30)] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [".x.partial-1", entry.digest]
    os.utime(tmp_path / ".x.partial-1", (old, old))
    assert [e.digest for e in cache.gc(older_than_days=7)] == [entry.digest]
    assert not any(tmp_path.iterdir())


def test_an_engine_from_another_gpu_is_refused() -> None:
    settings = {"tensorrt": "10.3.0", "compute_capability": "8.7"}
    check_engine_fits(settings, "10.3.0", "8.7")
    with pytest.raises(DifforgeError, match=r"built with TensorRT 10.3.0 for compute capability "
                       r"8.7; this machine has TensorRT 10.3.0 on compute capability 9.0"):
        check_engine_fits(settings, "10.3.0", "9.0")


# ---------------------------------------------------------------- the builder, on fakes


@pytest.fixture
def fake_tensorrt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[FakeTrt], Any]:
    monkeypatch.setenv("DIFFORGE_ENGINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(trt_api, "device", lambda: trt_api.Device("Orin (fake)", "8.7"))

    def use(trt: FakeTrt) -> RecordingLoaders:
        loaders = RecordingLoaders()
        monkeypatch.setattr(trt_api, "load", lambda: (trt, loaders))
        return loaders

    return use


@pytest.mark.parametrize("trt", [TRT10, TRT11], ids=["trt10", "trt11"])
def test_build_writes_one_engine_per_component_and_reuses_the_cache(
    clear_export: Path, tmp_path: Path, fake_tensorrt: Any, trt: FakeTrt
) -> None:
    loaders = fake_tensorrt(trt)
    built = build(BuildConfig(source=clear_export, output=tmp_path / "a", backend="tensorrt"))
    manifest = read_manifest(built)
    networks = [c for c in loaders.calls if c[0] == "network"]
    assert len(networks) == len(manifest.components)
    assert all(c[3] == [] for c in networks)  # custom ops inlined before TensorRT sees them
    for entry in manifest.components.values():
        assert entry.engine is not None and entry.engine.backend == "tensorrt"
        assert entry.file.endswith(".plan")
        assert (built / entry.file).read_bytes().startswith(b"PLAN")
        settings = entry.engine.settings
        assert settings["typing"] == ("weak" if trt is TRT10 else "strong")
        assert settings["compute_capability"] == "8.7" and settings["reused"] is False
        assert entry.engine.custom_ops == {
            op: "inlined" for op in entry.engine.custom_ops
        }
    # the same graphs for the same GPU and TensorRT: every engine comes from the cache
    loaders.calls.clear()
    again = read_manifest(build(BuildConfig(source=clear_export, output=tmp_path / "b",
                                            backend="tensorrt")))
    assert "engine" not in _kinds(loaders.calls)
    for key, entry in again.components.items():
        first = manifest.components[key].engine
        assert entry.engine is not None and first is not None and entry.engine.settings["reused"]
        # the reused engine records what its build did, as the first build recorded it
        same = ("typing", "flags", "tensorrt", "profiles", "refittable")
        assert {k: entry.engine.settings[k] for k in same} == {k: first.settings[k] for k in same}
    # without TensorRT here, the runtime's TensorRT runner says so in one line
    with pytest.raises(DifforgeError, match="TensorRT's Python module is not importable"):
        load(built)
    assert json.loads((built / "manifest.json").read_text())["stage"] == "built"


def test_plugin_nodes_are_refused_until_plugins_exist(
    clear_export: Path, tmp_path: Path, fake_tensorrt: Any
) -> None:
    fake_tensorrt(TRT11)
    with pytest.raises(DifforgeError, match="TensorRT plugins are not written yet"):
        build(BuildConfig(source=clear_export, output=tmp_path / "p", backend="tensorrt",
                          custom_ops="plugin"))
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize(("trt", "flags"), [(TRT10, {"fp16": True}), (TRT11, {})],
                         ids=["trt10", "trt11"])
def test_a_lowered_precision_reaches_tensorrt_in_the_graph(
    clear_export: Path, tmp_path: Path, fake_tensorrt: Any, trt: FakeTrt, flags: dict[str, Any]
) -> None:
    """fp16: the graph TensorRT parses carries the casts (difforge's lowering); TensorRT 10
    also gets the builder flag, TensorRT 11 (strongly typed) none."""
    from difforge.config import PrecisionConfig

    loaders = fake_tensorrt(trt)
    seen: list[int] = []
    parse = loaders.NetworkFromOnnxPath

    def count_casts(path: str, *, strongly_typed: bool | None = None) -> Any:
        graph = onnx.load(path, load_external_data=False)
        seen.append(sum(n.op_type == "Cast" for n in graph.graph.node))
        return parse(path, strongly_typed=strongly_typed)

    loaders.NetworkFromOnnxPath = count_casts  # type: ignore[method-assign]
    precision = PrecisionConfig(roles={"denoiser": "fp16"}, gate=False)
    built = build(BuildConfig(source=clear_export, output=tmp_path / "fp16", backend="tensorrt",
                              precision=precision))
    manifest = read_manifest(built)
    order = list(manifest.components)
    denoiser = order.index("denoiser")
    configs = [c for c in loaders.calls if c[0] == "config"]
    assert configs[denoiser][2] == {**flags, "load_timing_cache": configs[denoiser][2][
        "load_timing_cache"]}
    assert seen[denoiser] > 0 and all(seen[i] == 0 for i in range(len(seen)) if i != denoiser)
    entry = manifest.components["denoiser"]
    assert entry.precision == "fp16" and entry.engine is not None
    assert entry.engine.quality is not None and entry.engine.quality["precision"] == "fp16"


# ---------------------------------------------------------------- the plugin contract


def test_custom_op_nodes_keep_their_plugins_contract(clear_export: Path) -> None:
    """LocalAttention2D in a real export: the registered plugin's shape rule gives what the
    node makes on ONNX Runtime at the min, opt and max shapes, as its schema infers."""
    from difforge.engines.tensorrt import plugins
    from difforge.engines.tensorrt.plugins import PLUGINS, PluginSpec, check_plugin_contract

    manifest = read_manifest(clear_export)
    entry = manifest.components["denoiser"]
    graph = clear_export / entry.file
    assert check_plugin_contract(graph, entry) == []
    # a plugin that declares another shape is caught, at every profile shape
    wrong = PluginSpec("difforge::LocalAttention2D", "difforge", "1",
                       lambda ins, attrs: [(*ins[0][:-1], ins[0][-1] + 1)])
    original = PLUGINS["difforge::LocalAttention2D"]
    try:
        plugins.PLUGINS["difforge::LocalAttention2D"] = wrong
        problems = check_plugin_contract(graph, entry)
        assert len(problems) >= 3 and all("the plugin declares" in p for p in problems)
        assert {p.split(" at the ")[1].split(" ")[0] for p in problems} == {"min", "opt", "max"}
        del plugins.PLUGINS["difforge::LocalAttention2D"]
        missing = check_plugin_contract(graph, entry)
        assert missing and all(
            "no plugin is registered for difforge::LocalAttention2D" in m for m in missing
        )
        plugins.PLUGINS["difforge::LocalAttention2D"] = replace(original, version="2")
        assert "the registered one is difforge/2" in check_plugin_contract(graph, entry)[0]
    finally:
        plugins.PLUGINS["difforge::LocalAttention2D"] = original


def test_depthwise_conv_rule_matches_the_node(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    from difforge.artifact.manifest import ComponentEntry, TensorSpec
    from difforge.engines.tensorrt.plugins import check_plugin_contract
    from difforge.plugins.onnx_ops import attach_fallback_functions

    weight = numpy_helper.from_array(np.ones((4, 1, 7, 7), np.float32), "w")
    node = helper.make_node(
        "DepthwiseConv2D", ["x", "w"], ["y"], domain="difforge", name="dw",
        strides=[2, 2], dilations=[2, 2], pads=[6, 6, 6, 6], group=4,
        plugin_namespace="difforge", plugin_version="1",
    )
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20),
                                                    helper.make_opsetid("difforge", 1)])
    path = tmp_path / "dw.onnx"
    onnx.save(attach_fallback_functions(model), str(path))
    entry = ComponentEntry(
        role="denoiser", file="dw.onnx", outputs=[], tolerance=1e-4,
        inputs=[TensorSpec("x", "float32", ["batch", 4, "height", "width"])],
        axes={"batch": [1, 1, 2], "height": [9, 16, 31], "width": [9, 16, 31]},
    )
    assert check_plugin_contract(path, entry) == []
