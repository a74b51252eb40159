"""The OpenVINO engine: IR plus a compiled blob per component, the same images as ONNX
Runtime's engine in fp32, lowered precisions behind the gate, and precisions this CPU cannot
run refused rather than run in fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from difforge import BuildConfig, GenerateRequest, PrecisionConfig, build, info, load
from difforge.engines.openvino.builder import capabilities
from difforge.errors import DifforgeError
from difforge.evaluation.fidelity import psnr


def _image(artifact: Path, **kw: object) -> np.ndarray:
    pipe = load(artifact)
    return pipe(GenerateRequest(prompt="a castle", steps=5, seed=2, **kw)).images[0]  # type: ignore[arg-type]


def test_fp32_engine_matches_onnx_runtime(tiny_sd_openvino: Path, tiny_sd_artifact: Path) -> None:
    manifest = info(tiny_sd_openvino)
    for key, entry in manifest.components.items():
        assert entry.engine is not None and entry.engine.backend == "openvino"
        assert entry.file == f"{key}/model.xml"
        assert entry.engine.files == [f"{key}/model.xml", f"{key}/model.bin", f"{key}/model.blob"]
        assert entry.engine.settings["inference_precision"] == "f32"
        assert not (tiny_sd_openvino / key / "model.onnx").exists()
    ours, theirs = _image(tiny_sd_openvino), _image(tiny_sd_artifact)
    assert psnr(ours, theirs) > 40


def test_second_load_imports_the_compiled_blob(tiny_sd_openvino: Path) -> None:
    pipe = load(tiny_sd_openvino)
    assert all(not r.compiled_here for r in pipe.runners.values())  # type: ignore[attr-defined]
    assert pipe.notes == []


def test_custom_ops_are_inlined_for_openvino(clear_export: Path, tmp_path: Path) -> None:
    with pytest.raises(DifforgeError, match="no plugins for difforge's custom ops"):
        build(
            BuildConfig(
                source=clear_export, output=tmp_path / "p", backend="openvino", custom_ops="plugin"
            )
        )
    assert not (tmp_path / "p").exists()
    out = build(BuildConfig(source=clear_export, output=tmp_path / "ov", backend="openvino"))
    ort = build(BuildConfig(source=clear_export, output=tmp_path / "ort"))
    assert info(out).components["denoiser"].engine.custom_ops == {  # type: ignore[union-attr]
        "difforge::LocalAttention2D": "inlined"
    }
    request = GenerateRequest(class_label=3, steps=4, seed=0)
    assert psnr(load(out)(request).images[0], load(ort)(request).images[0]) > 40


@pytest.mark.parametrize("precision", ["int8", "int8-weights"])
def test_lowered_engines_pass_their_gate(
    tiny_sd_calibrated: Path, tmp_path: Path, precision: str
) -> None:
    out = build(
        BuildConfig(
            source=tiny_sd_calibrated,
            output=tmp_path / precision,
            backend="openvino",
            # tiny-sd's random weights: the int8 gate of tests/calib/test_lowering.py
            precision=PrecisionConfig(roles={"denoiser": precision}, min_cosine=0.95),
        )
    )
    entry = info(out).components["denoiser"]
    assert entry.precision == precision
    assert entry.engine is not None and entry.engine.quality is not None
    assert entry.engine.quality["gate"]["passed"]
    xml = (out / entry.file).read_text()
    if precision == "int8":  # NNCF's quantization: FakeQuantize ops in the IR
        assert 'type="FakeQuantize"' in xml
        assert entry.engine.quality["quantizer"] == "backend"
    else:
        assert 'element_type="i8"' in xml and 'type="FakeQuantize"' not in xml
    assert _image(out).std() > 1


def test_a_precision_this_cpu_cannot_run_is_never_run_in_fp32(
    tiny_sd_calibrated: Path, tmp_path: Path
) -> None:
    config = BuildConfig(
        source=tiny_sd_calibrated,
        output=tmp_path / "bf16",
        backend="openvino",
        precision=PrecisionConfig(roles={"denoiser": "bf16"}),
    )
    if "BF16" in capabilities():
        out = build(config)
        assert info(out).components["denoiser"].engine.quality["gate"]["passed"]  # type: ignore[union-attr]
        return
    with pytest.raises(DifforgeError, match="this CPU cannot run bf16 in OpenVINO"):
        build(config)
    assert not (tmp_path / "bf16").exists()
    config.precision.gate = False
    out = build(config)
    assert info(out).components["denoiser"].engine.settings["inference_precision"] == "bf16"  # type: ignore[union-attr]
    with pytest.raises(DifforgeError, match="denoiser is a bf16 engine, which this CPU cannot run"):
        load(out)


def test_onnx_runtime_refuses_bf16_and_names_the_backend_that_builds_it(
    tiny_sd_export: Path, tmp_path: Path
) -> None:
    with pytest.raises(DifforgeError, match=r"ort backend cannot build bf16 .*--backend openvino"):
        build(
            BuildConfig(
                source=tiny_sd_export,
                output=tmp_path / "x",
                precision=PrecisionConfig(roles={"denoiser": "bf16"}),
            )
        )
    assert not (tmp_path / "x").exists()


def test_the_ir_records_which_module_each_node_came_from(tiny_sd_openvino: Path) -> None:
    import json

    import openvino as ov

    from difforge.engines.openvino.builder import MODULES_KEY

    model = ov.Core().read_model(str(tiny_sd_openvino / "denoiser" / "model.xml"))
    table = json.loads(model.get_rt_info(MODULES_KEY).astype(str))
    # OpenVINO names an op after its ONNX node (a split-off bias adds "/WithoutBiases")
    names = {op.get_friendly_name().split("/")[0] for op in model.get_ops()}
    convs = [
        op.get_friendly_name().split("/")[0]
        for op in model.get_ops()
        if op.get_type_name() == "Convolution"
    ]
    assert convs and all(name in table for name in convs)
    assert len(set(table) & names) >= 0.9 * len(table)
    assert all(table[name].startswith("unet.") for name in convs)
