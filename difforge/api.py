"""The Python API. Each call takes one config object; the CLI only builds these and calls in."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from difforge._progress import Reporter, SilentReporter
from difforge.artifact.manifest import Manifest, read_manifest
from difforge.artifact.staging import check_target, scratch_folder
from difforge.config import (
    BuildConfig,
    CalibrateConfig,
    CompileConfig,
    ExportConfig,
    PrecisionConfig,
    ServeOptions,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from difforge.engines.base import EngineBuilder
    from difforge.evaluation import EvalReport
    from difforge.serve.rayserve.cluster import Plan, Stopper


def export(config: ExportConfig, reporter: Reporter | None = None) -> Path:
    """Export a model's components to verified ONNX graphs in ``config.output``."""
    from difforge.exporter.export import export as _export

    return _export(config, reporter)


def _builder(config: BuildConfig, reporter: Reporter | None) -> EngineBuilder:
    from difforge.engines import builder_class

    return builder_class(config.backend)(config, reporter)


def calibrate(config: CalibrateConfig, reporter: Reporter | None = None) -> Path:
    """Record calibration data by generating with the fp32 artifact ``config.source`` on the
    torch-free runtime; writes a calibrated artifact to ``config.output``."""
    from difforge.calib.prompts import default_prompts, read_prompts
    from difforge.runtime.calibrate import CalibrationSettings, record_calibration

    rep = reporter or SilentReporter()
    prompts = read_prompts(config.prompts) if config.prompts is not None else default_prompts()
    settings = CalibrationSettings(
        trajectories=config.samples,
        gate_trajectories=max(1, config.samples // 4),
        steps=config.steps,
        seed=config.seed,
        prompts=prompts,
    )
    with rep.progress("record calibration trajectories", config.samples) as advance:
        return record_calibration(
            config.source,
            config.output,
            settings,
            force=config.force,
            progress=lambda done, total: advance(1),
        )


def _check_precision(precision: PrecisionConfig, source: Manifest | None) -> None:
    """What ``--precision`` asks, checked before any export or calibration: the prompt file,
    and (given the source) the components it names."""
    from difforge.calib.precision import component_precisions
    from difforge.calib.prompts import read_prompts

    if precision.lowered and precision.calib_prompts is not None:
        read_prompts(precision.calib_prompts)
    if source is not None:
        roles = {key: entry.role for key, entry in source.components.items()}
        component_precisions(precision.roles, roles, roles)


def build(config: BuildConfig, reporter: Reporter | None = None) -> Path:
    """Build an engine artifact for ``config.backend`` from an export folder (calibrated
    first, in a scratch folder, when a lowered precision needs data the source lacks)."""
    rep = reporter or SilentReporter()
    builder = _builder(config, rep)
    builder.check_config()
    source = read_manifest(config.source, verify=False)
    _check_precision(config.precision, source)
    if not config.precision.lowered or source.calibration:
        return builder.build()
    check_target(config.output, config.force)
    config.output.parent.mkdir(parents=True, exist_ok=True)
    scratch = scratch_folder(config.output, "export")
    try:
        precision = config.precision
        calibrated = calibrate(
            CalibrateConfig(
                source=config.source,
                output=scratch / "calibrated",
                samples=precision.calib_samples,
                prompts=precision.calib_prompts,
                seed=precision.calib_seed,
            ),
            rep,
        )
        return _builder(replace(config, source=calibrated), rep).build()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def compile(config: CompileConfig, reporter: Reporter | None = None) -> Path:
    """Export then build, leaving only the built artifact at ``config.export.output``."""
    rep = reporter or SilentReporter()
    target = config.export.output
    build_config = BuildConfig(
        source=target,  # replaced by the scratch export below
        output=target,
        backend=config.backend,
        threads=config.threads,
        optimize=config.optimize,
        force=config.export.force,
        custom_ops=config.custom_ops,
        precision=config.precision,
    )
    _builder(build_config, rep).check_config()  # bad build settings fail before the export
    _check_precision(config.precision, None)
    check_target(target, config.export.force)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = scratch_folder(target, "export")
    try:
        exported = export(replace(config.export, output=scratch / "export", force=False), rep)
        return build(replace(build_config, source=exported), rep)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def evaluate(artifact: str | Path, **kwargs: Any) -> EvalReport:
    """PSNR/SSIM of an artifact's images against its PyTorch source (and, for the digits
    reference models, class accuracy and FD): see :func:`difforge.evaluation.evaluate`."""
    from difforge.evaluation import evaluate as run_evaluation

    return run_evaluation(artifact, **kwargs)


def info(artifact: str | Path, verify: bool = True) -> Manifest:
    """Read (and by default hash-check) an artifact's manifest."""
    return read_manifest(Path(artifact), verify=verify)


def serve_http(
    options: ServeOptions,
    on_ready: Callable[[str, Plan], None] | None = None,
    stopper: Stopper | None = None,
) -> None:
    """Serve ``options.artifact`` over HTTP on Ray Serve until ``stopper`` is set (SIGINT or
    SIGTERM when it is not given), then let replicas finish their requests and stop.
    ``on_ready(url, plan)`` is called once the replicas answer."""
    from difforge.serve.rayserve.cluster import Stopper, serve_artifact

    serve_artifact(options, on_ready or (lambda url, plan: None), stopper or Stopper())
