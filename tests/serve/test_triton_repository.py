"""``difforge export-triton``: the repository's structure, checked against the graphs.

Every ``config.pbtxt`` is parsed back as a ``ModelConfig``; each component model's tensors
are compared with its copied ONNX graph's own inputs and outputs (read with ``onnx``). The
TensorRT, unbatched and refusal branches run on copies of the digits artifact with their
manifest rewritten (and rehashed) the way those builds record them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from difforge.artifact.manifest import (
    ComponentEntry,
    EngineRecord,
    TensorSpec,
    read_manifest,
    write_manifest,
)
from difforge.errors import DifforgeError
from difforge.serve.triton import repository as repo_module
from difforge.serve.triton.repository import export_triton
from tests.cli.test_errors import assert_user_error, difforge
from tests.serve.triton_artifacts import deepcache_artifact, digits_artifact, repository

ONNX_TYPES = {
    onnx.TensorProto.FLOAT: mc.TYPE_FP32,
    onnx.TensorProto.FLOAT16: mc.TYPE_FP16,
    onnx.TensorProto.INT64: mc.TYPE_INT64,
    onnx.TensorProto.INT32: mc.TYPE_INT32,
    onnx.TensorProto.BOOL: mc.TYPE_BOOL,
}


def _config(folder: Path) -> mc.ModelConfig:
    return text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())


def _graph_dims(value: onnx.ValueInfoProto) -> list[int]:
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else -1 for d in dims]


def check_component(folder: Path, graph_in_artifact: Path, batch_max: int) -> mc.ModelConfig:
    """The model in ``folder`` declares exactly its graph's tensors, batched by the rule."""
    config = _config(folder)
    assert config.name == folder.name
    assert config.backend == "onnxruntime" and config.default_model_filename == "model.onnx"
    graph_path = folder / "1" / "model.onnx"
    assert graph_path.read_bytes() == graph_in_artifact.read_bytes()
    graph = onnx.load(str(graph_path), load_external_data=False)
    for tensor in graph.graph.initializer:  # external data lies beside the copied graph
        for entry in tensor.external_data:
            if entry.key == "location":
                assert (folder / "1" / entry.value).is_file(), entry.value
    onnx.load(str(graph_path))  # and loads from there
    values = [*graph.graph.input, *graph.graph.output]
    declared = [*config.input, *config.output]
    assert [t.name for t in declared] == [v.name for v in values]
    assert config.max_batch_size == batch_max
    assert config.HasField("dynamic_batching") == (batch_max > 0)
    for tensor, value in zip(declared, values, strict=True):
        assert tensor.data_type == ONNX_TYPES[value.type.tensor_type.elem_type], tensor.name
        dims = _graph_dims(value)
        if batch_max:
            assert dims[0] == -1  # the graph's batch dim is symbolic: Triton owns it
            dims = dims[1:]
        if dims:
            assert list(tensor.dims) == dims and not tensor.HasField("reshape"), tensor.name
        else:  # a [batch] tensor: dims [1], reshaped to the graph's scalar per item
            assert list(tensor.dims) == [1] and tensor.HasField("reshape"), tensor.name
            assert list(tensor.reshape.shape) == []
    groups = [(g.kind, g.count) for g in config.instance_group]
    assert groups == [(mc.ModelInstanceGroup.KIND_CPU, 1)]
    return config


def check_pipeline(repo: Path, art: Path, components: dict[str, str], channels: int) -> None:
    config = _config(repo / "pipeline")
    assert config.backend == "python" and config.max_batch_size == 0
    (request,) = config.input
    assert (request.name, request.data_type, list(request.dims)) == ("request", mc.TYPE_STRING, [1])
    (image,) = config.output
    assert (image.name, image.data_type) == ("image", mc.TYPE_UINT8)
    assert list(image.dims) == [-1, -1, -1, channels]
    mapped = json.loads(config.parameters["components"].string_value)
    assert {k: v["model"] for k, v in mapped.items()} == components
    assert "from difforge.serve.triton.bls import TritonPythonModel" in (
        repo / "pipeline" / "1" / "model.py"
    ).read_text()
    carried = sorted(
        p.relative_to(repo / "pipeline" / "1" / "artifact").as_posix()
        for p in (repo / "pipeline" / "1" / "artifact").rglob("*") if p.is_file()
    )
    manifest = read_manifest(art)
    tokenizer = manifest.tokenizer.files if manifest.tokenizer else []
    assert carried == sorted(["manifest.json", *tokenizer])  # no graph, no weights
    for rel in carried:
        assert (repo / "pipeline" / "1" / "artifact" / rel).read_bytes() == (art / rel).read_bytes()
    top = sorted(p.name for p in repo.iterdir())
    assert top == sorted(["README.md", "difforge-triton.json", "pipeline", *components.values()])


def test_digits_repository(tmp_path_factory: pytest.TempPathFactory) -> None:
    art = digits_artifact(tmp_path_factory)
    repo = repository(tmp_path_factory, art)
    check_component(repo / "denoiser", art / "denoiser" / "model.onnx", batch_max=8)
    check_pipeline(repo, art, {"denoiser": "denoiser"}, channels=1)  # grey digits
    readme = (repo / "README.md").read_text()
    assert "`denoiser`" in readme and "`max_batch_size: 8`, dynamic batching" in readme
    assert '"class_label": 3' in readme and "(N, H, W, 1)" in readme


def test_tiny_sd_repository(tiny_sd_artifact: Path, tmp_path: Path) -> None:
    result = export_triton(tiny_sd_artifact, tmp_path / "repo")
    repo = result.output
    manifest = read_manifest(tiny_sd_artifact)
    for key, entry in manifest.components.items():
        check_component(repo / key, tiny_sd_artifact / entry.file, entry.axes["batch"][2])
    check_pipeline(repo, tiny_sd_artifact, {k: k for k in manifest.components}, channels=3)
    assert list(result.models) == [*manifest.components, "pipeline"]
    assert result.files == sum(1 for p in repo.rglob("*") if p.is_file())
    assert "a photo of a cat" in (repo / "README.md").read_text()


def test_export_folder_graphs_go_to_onnxruntime(tiny_sd_export: Path, tmp_path: Path) -> None:
    """An export folder's components have no engine record: their plain graphs are served."""
    assert all(c.engine is None for c in read_manifest(tiny_sd_export).components.values())
    repo = export_triton(tiny_sd_export, tmp_path / "repo").output
    for key, entry in read_manifest(tiny_sd_export).components.items():
        check_component(repo / key, tiny_sd_export / entry.file, entry.axes["batch"][2])


def test_step_variants_are_models_of_their_own(tmp_path_factory: pytest.TempPathFactory) -> None:
    art = deepcache_artifact(tmp_path_factory)
    repo = repository(tmp_path_factory, art)
    manifest = read_manifest(art)
    assert manifest.plan.variants == {"full": "denoiser", "shallow": "denoiser@shallow"}
    for key, name in (("denoiser", "denoiser"), ("denoiser@shallow", "denoiser__shallow")):
        check_component(repo / name, art / manifest.components[key].file, batch_max=8)
        shared = (repo / name / "1" / "weights.data").read_bytes()
        assert shared == (art / "denoiser" / "weights.data").read_bytes()
    check_pipeline(
        repo, art, {"denoiser": "denoiser", "denoiser@shallow": "denoiser__shallow"}, 1
    )
    assert "shallow -> `denoiser__shallow`" in (repo / "README.md").read_text()


@pytest.fixture
def art_copy(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    dst = tmp_path / "art"
    shutil.copytree(digits_artifact(tmp_path_factory), dst)
    return dst


def _rewrite(art: Path, edit: Callable[[ComponentEntry, EngineRecord], None]) -> None:
    """Edit the denoiser's entry and engine record, and hash the artifact again."""
    manifest = read_manifest(art)
    entry = manifest.components["denoiser"]
    assert entry.engine is not None
    edit(entry, entry.engine)
    write_manifest(art, manifest)


def test_tensorrt_plan(art_copy: Path, tmp_path: Path) -> None:
    """A TensorRT artifact as difforge's TensorRT builder records it: the component's file is
    its plan, the engine record lists it, the ONNX graph is not shipped."""
    plan = np.random.default_rng(0).bytes(4096)

    def to_plan(entry: ComponentEntry, engine: EngineRecord) -> None:
        (art_copy / "denoiser" / "model.onnx").unlink()
        (art_copy / "denoiser" / "model.plan").write_bytes(plan)
        entry.file = "denoiser/model.plan"
        engine.backend, engine.files, engine.passes, engine.requires = (
            "tensorrt", ["denoiser/model.plan"], [], None
        )
        engine.settings = {"tensorrt": "10.13.0", "compute_capability": "9.0",
                           "buckets": [[32, 48], [48, 64]]}  # two optimization profiles

    _rewrite(art_copy, to_plan)
    repo = export_triton(art_copy, tmp_path / "repo", instances=2).output
    config = _config(repo / "denoiser")
    assert (config.platform, config.backend) == ("tensorrt_plan", "tensorrt")
    assert config.default_model_filename == "model.plan"
    assert (repo / "denoiser" / "1" / "model.plan").read_bytes() == plan
    assert sorted(p.name for p in (repo / "denoiser" / "1").iterdir()) == ["model.plan"]
    assert [(g.kind, g.count, list(g.profile)) for g in config.instance_group] == [
        (mc.ModelInstanceGroup.KIND_GPU, 2, ["0", "1"])
    ]
    assert config.max_batch_size == 8 and [list(t.dims) for t in config.input] == [
        [1, -1, -1], [1], [1]
    ]
    assert not config.parameters  # ONNX Runtime's thread settings are not a plan's
    assert "TensorRT plan runs only with the TensorRT version" in (repo / "README.md").read_text()
    assert _config(repo / "pipeline").instance_group[0].count == 2


def test_tensorrt_record_without_a_plan_is_refused(art_copy: Path, tmp_path: Path) -> None:
    def no_plan(entry: ComponentEntry, engine: EngineRecord) -> None:
        engine.backend = "tensorrt"

    _rewrite(art_copy, no_plan)
    with pytest.raises(DifforgeError, match=r"TensorRT engine record names no \.plan file"):
        export_triton(art_copy, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_a_component_without_leading_batch_axes_is_unbatched(
    art_copy: Path, tmp_path: Path
) -> None:
    """A per-step table input of fixed shape (HiDiffusion's shift, say) cannot be batched by
    Triton: the whole component then has max_batch_size 0 and full dims."""

    def add_table(entry: ComponentEntry, engine: EngineRecord) -> None:
        entry.inputs.append(TensorSpec("shift", "int64", [1]))

    _rewrite(art_copy, add_table)
    repo = export_triton(art_copy, tmp_path / "repo").output
    config = _config(repo / "denoiser")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert {t.name: list(t.dims) for t in config.input} == {
        "sample": [-1, 1, -1, -1], "timestep": [-1], "class_labels": [-1], "shift": [1]
    }
    assert not any(t.HasField("reshape") for t in [*config.input, *config.output])
    readme = (repo / "README.md").read_text()
    assert "`max_batch_size: 0` (shift has no leading batch axis)" in readme


@pytest.mark.parametrize(
    ("backend", "custom_ops", "needle"),
    [
        ("openvino", {}, "component denoiser is an OpenVINO engine"),
        ("ort", {"difforge::LocalAttention2D": "plugin"}, "as plugin nodes"),
        ("coreml", {}, "engine backend 'coreml' has no Triton backend"),
    ],
)
def test_refused_engines(
    art_copy: Path, tmp_path: Path, backend: str, custom_ops: dict[str, str], needle: str
) -> None:
    def edit(entry: ComponentEntry, engine: EngineRecord) -> None:
        engine.backend, engine.custom_ops = backend, custom_ops

    _rewrite(art_copy, edit)
    with pytest.raises(DifforgeError, match=needle):
        export_triton(art_copy, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def test_a_failed_export_leaves_nothing(
    art_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "repo"

    def broken(*args: object) -> int:
        raise OSError("disk full")

    monkeypatch.setattr(repo_module, "_copy", broken)
    with pytest.raises(OSError, match="disk full"):
        export_triton(art_copy, out)
    assert not out.exists() and _siblings(out) == []
    monkeypatch.undo()
    export_triton(art_copy, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    monkeypatch.setattr(repo_module, "_copy", broken)
    with pytest.raises(OSError, match="disk full"):
        export_triton(art_copy, out, force=True, instances=3)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # untouched
    assert _siblings(out) == []


def test_existing_outputs(art_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "repo"
    export_triton(art_copy, out)
    with pytest.raises(DifforgeError, match="already exists \\(use --force"):
        export_triton(art_copy, out)
    export_triton(art_copy, out, force=True, instances=4)
    assert _config(out / "denoiser").instance_group[0].count == 4
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(DifforgeError, match="not a Triton repository written by difforge"):
        export_triton(art_copy, mine, force=True)
    assert (mine / "notes.txt").read_text() == "keep"
    empty = tmp_path / "empty"
    empty.mkdir()
    export_triton(art_copy, empty, force=True)
    assert (empty / "denoiser" / "config.pbtxt").is_file()
    with pytest.raises(DifforgeError, match="must not contain each other"):
        export_triton(art_copy, art_copy / "repo")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"instances": 0}, "--instances must be 1 to 64"),
        ({"pipeline_name": "denoiser"}, "is the name of a component model"),
        ({"pipeline_name": "a/b"}, "--pipeline-name 'a/b'"),
    ],
)
def test_bad_options(art_copy: Path, tmp_path: Path, kwargs: dict, needle: str) -> None:
    with pytest.raises(DifforgeError, match=needle):
        export_triton(art_copy, tmp_path / "repo", **kwargs)
    assert not (tmp_path / "repo").exists()


def test_pipeline_name(art_copy: Path, tmp_path: Path) -> None:
    repo = export_triton(art_copy, tmp_path / "repo", pipeline_name="digits").output
    assert _config(repo / "digits").name == "digits" and not (repo / "pipeline").exists()
    assert json.loads((repo / "difforge-triton.json").read_text())["pipeline"] == "digits"


def test_cli(art_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "repo"
    done = difforge("export-triton", str(art_copy), "-o", str(out), "--instances", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {out} (2 models, ")
    assert "  denoiser: onnxruntime, max_batch_size 8" in done.stdout
    assert _config(out / "denoiser").instance_group[0].count == 2
    assert_user_error(difforge("export-triton", str(art_copy), "-o", str(out)), "already exists")
    missing = tmp_path / "nope"
    assert_user_error(
        difforge("export-triton", str(missing), "-o", str(tmp_path / "r2")), "artifact not found"
    )
    graph = art_copy / "denoiser" / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:-1] + b"\0")  # same size, another hash
    assert_user_error(
        difforge("export-triton", str(art_copy), "-o", str(tmp_path / "r3")), "sha256 differs"
    )
    assert_user_error(
        difforge("export-triton", str(art_copy), "-o", str(tmp_path / "r4"), "--instances", "0"),
        "--instances must be 1 to 64",
    )
    assert not any((tmp_path / name).exists() for name in ("r2", "r3", "r4"))


def test_without_tritonclient_the_command_names_its_extra(art_copy: Path, tmp_path: Path) -> None:
    from tests.test_install_extras import _without

    done = _without(("tritonclient",), "export-triton", str(art_copy), "-o", str(tmp_path / "r"))
    assert_user_error(done, "`difforge export-triton` needs 'tritonclient'")
    assert done.stderr.strip().endswith("pip install 'difforge[triton]'")
    assert not (tmp_path / "r").exists()


def test_a_scalar_in_an_unbatched_model_is_refused() -> None:
    """Triton refuses an empty reshape without batching, and a 0-d tensor needs one."""
    from difforge.artifact.manifest import TensorSpec
    from difforge.serve.triton.layout import triton_dims

    scalar = TensorSpec("shift", "int64", [])
    assert triton_dims(TensorSpec("t", "float32", ["batch"]), True) == ([1], True)
    assert triton_dims(TensorSpec("x", "float32", [2, "h"]), False) == ([2, -1], False)
    with pytest.raises(DifforgeError, match="'shift' has no dimensions"):
        triton_dims(scalar, False)
