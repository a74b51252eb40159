"""The Python API. Each call takes one config object; the CLI only builds these and calls in."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from difforge._fs import check_target
from difforge._progress import Reporter, SilentReporter
from difforge.config import BuildConfig, CompileConfig, ExportConfig
from difforge.runtime.manifest import Manifest, read_manifest

if TYPE_CHECKING:
    from difforge.evaluation import EvalReport


def export(config: ExportConfig, reporter: Reporter | None = None) -> Path:
    """Export a model's components to verified ONNX graphs in ``config.output``."""
    from difforge.export.exporter import export as _export

    return _export(config, reporter)


def build(config: BuildConfig, reporter: Reporter | None = None) -> Path:
    """Build an engine artifact for ``config.backend`` from an export folder."""
    from difforge.engines import get_builder

    return get_builder(config.backend)(config, reporter)


def compile(config: CompileConfig, reporter: Reporter | None = None) -> Path:
    """Export then build, leaving only the built artifact at ``config.export.output``."""
    from difforge.engines import get_builder

    rep = reporter or SilentReporter()
    target = config.export.output
    builder = get_builder(config.backend)
    check_target(target, config.export.force)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.export-", dir=target.parent))
    try:
        exported = scratch / "export"
        export_cfg = ExportConfig(**{**config.export.__dict__, "output": exported, "force": False})
        export(export_cfg, rep)
        return builder(
            BuildConfig(
                source=exported,
                output=target,
                backend=config.backend,
                threads=config.threads,
                optimize=config.optimize,
                force=config.export.force,
            ),
            rep,
        )
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
