"""OpenVINO CPU engine: the (lowered) ONNX graph as OpenVINO IR plus a compiled blob.

The build inlines difforge's custom ops and folds constants (OpenVINO has no plugin for the
``difforge::`` ops), lowers the graph to the component's precision, converts it to IR and
compiles it once to export the compiled model into the artifact, so a runtime on the same CPU
and OpenVINO version imports it instead of compiling (a fast second load). The IR carries, in
its model-level ``rt_info`` (:data:`MODULES_KEY`), which PyTorch module each ONNX node came
from, so ``difforge profile`` attributes OpenVINO's per-node counters to modules as it does
ONNX Runtime's.

Precisions: ``int8`` is NNCF's post-training quantization from the recorded trajectories,
with the precision stage's exclusions (:func:`nncf_int8`); ``int8-weights`` compresses weights
with NNCF (symmetric int8, activations in float); ``bf16`` and ``fp16`` are OpenVINO's
inference-precision hint on the fp32 graph. A hint the CPU cannot honour is refused rather
than silently run in fp32: OpenVINO reports what it can run (``OPTIMIZATION_CAPABILITIES``),
which is read, never guessed from a version.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from difforge.artifact.manifest import ComponentEntry
from difforge.artifact.scopes import module_path
from difforge.calib.gates import Run
from difforge.calib.lower import Int8Writer
from difforge.engines import register_builder
from difforge.engines.base import ComponentBuild, EngineBuilder
from difforge.engines.ort.builder import optimize_graph
from difforge.errors import DifforgeError
from difforge.passes import get_pass

#: component precision -> OpenVINO inference precision hint and the capability it needs
HINTS = {
    "fp32": ("f32", "FP32"),
    "int8": ("f32", "INT8"),
    "int8-weights": ("f32", "FP32"),
    "bf16": ("bf16", "BF16"),
    "fp16": ("f16", "FP16"),
}


#: where in the IR's rt_info the node name -> module path table is (a JSON string)
MODULES_KEY = ["difforge", "modules"]


def module_table(graph: Path) -> dict[str, str]:
    """ONNX node name -> the module path the exporter recorded (nodes with metadata only)."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    table = {}
    for node in model.graph.node:
        path = module_path({p.key: p.value for p in node.metadata_props})
        if path is not None:
            table[node.name] = path
    return table


def capabilities() -> list[str]:
    import openvino as ov

    return [str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def machine_key() -> dict[str, Any]:
    """What a compiled blob is valid for: OpenVINO's version, the CPU and what it can run."""
    import openvino as ov

    core = ov.Core()
    return {
        "openvino": ov.get_version(),
        "cpu": str(core.get_property("CPU", "FULL_DEVICE_NAME")),
        "capabilities": capabilities(),
    }


def compile_config(settings: dict[str, Any]) -> dict[str, Any]:
    """OpenVINO's compile properties from a component's recorded settings."""
    config: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": settings["inference_precision"],
        "PERFORMANCE_HINT": "LATENCY",
    }
    if settings.get("threads"):
        config["INFERENCE_NUM_THREADS"] = int(settings["threads"])
    return config


def compiled_run(compiled: Any) -> Run:
    """A feeds -> outputs callable over an OpenVINO compiled model."""
    request = compiled.create_infer_request()
    names = [o.get_any_name() for o in compiled.outputs]

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request.infer(feeds)
        return {n: np.array(request.get_tensor(n).data) for n in names}

    return run


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[Any]:
    """NNCF without its tables and progress bars (difforge reports for itself)."""
    import nncf

    nncf.set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield nncf


def _compress_weights(model: Any) -> Any:
    """Symmetric per-channel int8 weights (NNCF)."""
    with _quiet_nncf() as nncf:
        return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_SYM)


def nncf_int8(
    graph: Path, out: Path, keep: list[str], feeds: Iterable[dict[str, np.ndarray]]
) -> None:
    """INT8 for OpenVINO with NNCF's post-training quantization: OpenVINO IR with its
    FakeQuantize placement, symmetric, from the recorded trajectories; the nodes the precision
    stage keeps in float (embeddings, first and last layers, activation products, groups kept
    by sensitivity) are NNCF's ignored scope. OpenVINO names an ONNX node's op after it, with
    ``/WithoutBiases`` when a bias was split off.

    Two settings are measured choices (mean cosine to fp32 in the noisiest timestep bucket,
    digits-unet / digits-dit, no group kept): NNCF's transformer model type (SmoothQuant, and
    only the matmul and convolution inputs quantized, as Optimum-Intel does for diffusion
    U-Nets) 0.978 / 0.942 against 0.954 / 0.913 for the default; with the overflow fix on
    every layer (7-bit weights, so u8 x s8 pairs cannot saturate on CPUs without VNNI)
    0.987 / 0.971. The same QDQ graph ONNX Runtime runs at 0.975 reaches only 0.780 on
    OpenVINO, so OpenVINO gets NNCF's graph, not the Q/DQ one."""
    import openvino as ov
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
    )

    records = list(feeds)
    ignored = [name for n in keep for name in (n, f"{n}/WithoutBiases")]
    with _quiet_nncf() as nncf:
        model = nncf.quantize(
            ov.Core().read_model(str(graph)),
            nncf.Dataset(records),
            subset_size=len(records),
            preset=nncf.QuantizationPreset.PERFORMANCE,
            model_type=nncf.ModelType.TRANSFORMER,
            ignored_scope=nncf.IgnoredScope(names=ignored, validate=False),
            advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE),
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(out), compress_to_fp16=False)


@register_builder
class OpenVinoBuilder(EngineBuilder):
    """OpenVINO IR and a compiled blob per component; custom ops inlined."""

    backend = "openvino"
    precisions = ("fp32", "fp16", "bf16", "int8", "int8-weights")
    writes_onnx = False

    def int8_writer(self) -> Int8Writer | None:
        return nncf_int8

    def check_config(self) -> None:
        super().check_config()
        import openvino  # noqa: F401  (the `openvino` extra; one line if it is missing)

        if self.custom_ops == "plugin":
            raise DifforgeError(
                "the openvino backend has no plugins for difforge's custom ops; "
                "build with --custom-ops inline (its default)"
            )
        wanted = set(self.config.precision.roles.values())
        if "int8" in wanted and self.config.precision.calib_method != "minmax":
            raise DifforgeError(
                "the openvino backend quantizes with NNCF, from min-max statistics; "
                f"--calib-method {self.config.precision.calib_method} is one of ONNX Runtime's "
                "calibrators (--backend ort)"
            )
        if "int8-weights" in wanted:
            import nncf  # noqa: F401
        have = capabilities()
        for precision in sorted(wanted):
            need = HINTS[precision][1]
            if need not in have and self.config.precision.gate:
                raise DifforgeError(
                    f"this CPU cannot run {precision} in OpenVINO (it reports "
                    f"{', '.join(have)}), so the {precision} gate cannot be measured here: "
                    f"build on a CPU with {need}, or pass --no-gate"
                )

    def build_component(
        self, role: str, entry: ComponentEntry, src: Path, dst: Path
    ) -> ComponentBuild:
        precision = self.precision_of(role)
        settings = {
            "device": "CPU",
            "inference_precision": HINTS[precision][0],
            "threads": self.config.threads,
        }
        xml = dst.with_suffix(".xml")
        files = [xml, xml.with_suffix(".bin"), xml.with_suffix(".blob")]
        with tempfile.TemporaryDirectory(dir=dst.parent.parent) as tmp:
            fp32 = Path(tmp) / "fp32" / dst.name
            with self.rep.task(f"prepare {role} for OpenVINO"):
                passes = optimize_graph(
                    src, fp32, [get_pass("inline_functions"), get_pass("fold_constants")]
                )

            modules = module_table(fp32)

            def finish(graph: Path) -> Run:
                return compiled_run(self._write_engine(graph, xml, settings, precision, modules))

            if precision == "fp32":
                finish(fp32)
                quality = None
            else:  # NNCF's int8 is IR already; the other precisions start from the ONNX
                name = "model.xml" if precision == "int8" else dst.name
                lowered = Path(tmp) / "lowered" / name
                quality = self.lower(role, src, fp32, lowered, finish).record()
        settings["blob"] = xml.with_suffix(".blob").name
        settings["blob_for"] = machine_key()
        root = dst.parent.parent
        return ComponentBuild(
            settings=settings,
            passes=[p.record() for p in passes],
            files=[f.relative_to(root).as_posix() for f in files],
            quality=quality,
        )

    def _write_engine(
        self,
        graph: Path,
        xml: Path,
        settings: dict[str, Any],
        precision: str,
        modules: dict[str, str],
    ) -> Any:
        """Convert ``graph`` to IR at ``xml``, compile it, export the blob; the compiled model."""
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(graph))
        if precision == "int8-weights":
            model = _compress_weights(model)
        model.set_rt_info(json.dumps(modules, sort_keys=True), MODULES_KEY)
        xml.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(model, str(xml), compress_to_fp16=False)
        compiled = core.compile_model(core.read_model(str(xml)), "CPU", compile_config(settings))
        blob = compiled.export_model()
        data = blob.getvalue() if hasattr(blob, "getvalue") else bytes(blob)
        xml.with_suffix(".blob").write_bytes(data)
        shutil.rmtree(Path(str(xml) + ".cache"), ignore_errors=True)
        return compiled
