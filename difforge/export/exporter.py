"""``difforge export``: source -> patches -> one verified ONNX graph per component -> folder."""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from difforge._fs import check_target, staged_folder
from difforge._progress import Reporter, SilentReporter
from difforge.config import ExportConfig, ResolutionRange
from difforge.errors import DifforgeError
from difforge.export.components import components_for
from difforge.export.onnx_export import export_component
from difforge.export.sources import SourceModel, load_source
from difforge.export.sources.base import Resolution
from difforge.export.verify import verify_component
from difforge.runtime.manifest import ComponentEntry, Manifest, write_manifest
from difforge.versions import library_versions


def resolve_resolution(base: Resolution, wanted: ResolutionRange) -> Resolution:
    """The source's range, narrowed or widened as asked; every bound a multiple of its factor."""
    m = base.multiple
    if wanted.default is not None and wanted.min is None and wanted.max is None:
        lo, default, hi = (
            min(base.min, wanted.default),
            wanted.default,
            max(base.max, wanted.default),
        )
    else:
        lo = wanted.min if wanted.min is not None else base.min
        hi = wanted.max if wanted.max is not None else base.max
        default = wanted.default if wanted.default is not None else min(max(base.default, lo), hi)
    for label, value in (("minimum", lo), ("default", default), ("maximum", hi)):
        if value % m:
            raise DifforgeError(
                f"resolution {label} {value} is not a multiple of {m} (the model's factor)"
            )
    return Resolution(min=lo, default=default, max=hi, multiple=m)


def _apply_patches(source: SourceModel, requests: list[str]) -> list[dict[str, Any]]:
    if not requests:
        return []
    try:
        from difforge.export import patches
    except ImportError as exc:  # pragma: no cover - the registry ships with the package
        raise DifforgeError(f"patches are not available: {exc}") from None
    parsed = [patches.parse_patch_arg(text) for text in requests]
    reports = patches.apply_patches(source.denoiser, parsed)
    return [r.to_dict() for r in reports]


def export(config: ExportConfig, reporter: Reporter | None = None) -> Path:
    """Export every component of a model to ONNX, verify it, and write an export folder."""
    rep = reporter or SilentReporter()
    if config.max_batch < 1:
        raise DifforgeError(f"--max-batch must be at least 1, got {config.max_batch}")
    check_target(config.output, config.force)
    with rep.task(f"load {config.preset or config.model}"):
        source = load_source(config.preset, config.model, config.seed)
    source = replace(source, resolution=resolve_resolution(source.resolution, config.resolution))
    if source.random_weights:
        rep.note(f"{source.name}: {source.description['weights']}")
    patch_reports = _apply_patches(source, config.patches)
    for report in patch_reports:
        rep.note(f"patch {report['name']}: replaced {report['count']} modules")
    components = components_for(source, config.max_batch)
    entries: dict[str, ComponentEntry] = {}
    with staged_folder(config.output, config.force) as staging:
        for role, component in components.items():
            rel = f"{role}/model.onnx"
            with rep.task(f"export {role}"):
                export_component(component, staging / rel, config.opset)
            checks: list[dict[str, Any]] = []
            if config.verify:
                with rep.task(f"verify {role} on ONNX Runtime at min/opt/max shapes"):
                    checks = verify_component(component, staging / rel)
                worst = max(c["max_rel"] for c in checks)
                rep.note(
                    f"{role}: max relative error {worst:.1e} "
                    f"(tolerance {component.spec.tolerance:.0e})"
                )
            entries[role] = component.spec.manifest_entry(rel, checks)
        tokenizer = None
        if source.tokenizer_dir is not None:
            (staging / "tokenizer").mkdir()
            for name in ("vocab.json", "merges.txt"):
                shutil.copyfile(source.tokenizer_dir / name, staging / "tokenizer" / name)
            tokenizer = {
                "type": "clip-bpe",
                "vocab": "tokenizer/vocab.json",
                "merges": "tokenizer/merges.txt",
                "max_length": 77,
            }
        manifest = Manifest(
            stage="exported",
            created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            versions=library_versions(),
            source=source.description,
            pipeline=pipeline_section(source),
            scheduler={
                "name": source.scheduler_name,
                "config": source.scheduler_config,
                "default_steps": source.default_steps,
            },
            components=entries,
            patches=patch_reports,
            precision="fp32",
            engine=None,
            tokenizer=tokenizer,
        )
        write_manifest(staging, manifest)
    return config.output


def pipeline_section(source: SourceModel) -> dict[str, Any]:
    section: dict[str, Any] = {
        "type": source.kind,
        "latent_channels": source.latent_channels,
        "vae_scale_factor": source.vae_scale_factor,
        "scaling_factor": source.scaling_factor,
        "resolution": source.resolution.to_dict(),
        "default_guidance": source.default_guidance,
    }
    if source.kind == "class-to-image":
        section["num_classes"] = source.num_classes
        section["null_class"] = source.null_class
    return section
