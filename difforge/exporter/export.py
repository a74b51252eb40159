"""``difforge export``: source -> patches -> one verified ONNX graph per component -> folder."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import onnx

from difforge._progress import Reporter, SilentReporter
from difforge.artifact.manifest import ComponentEntry, Manifest, Stage, write_manifest
from difforge.artifact.sections import PipelineSection, SchedulerSection, TokenizerSection
from difforge.artifact.staging import check_target, staged_folder
from difforge.artifact.step_plan import BASE
from difforge.artifact.weights import share_weights
from difforge.config import ExportConfig
from difforge.errors import DifforgeError
from difforge.exporter.components import Component
from difforge.exporter.onnx_export import export_component
from difforge.exporter.prepare import (
    PreparedModel,
    check_config,
    create_patches,
    prepare_model,
)
from difforge.exporter.state import with_state
from difforge.exporter.verify import check_outputs, reference_outputs, release_weights
from difforge.sources import SourceModel
from difforge.sources.tokenizer import write_clip_tokenizer
from difforge.versions import library_versions


def export(config: ExportConfig, reporter: Reporter | None = None) -> Path:
    """Export every component of a model to ONNX, verify it, and write an export folder."""
    rep = reporter or SilentReporter()
    newest = onnx.defs.onnx_opset_version()
    if not 1 <= config.opset <= newest:
        raise DifforgeError(
            f"--opset {config.opset} does not exist (the installed onnx knows 1 to {newest})"
        )
    check_config(config)
    check_target(config.output, config.force)
    prepared = prepare_model(config, rep, create_patches(config.patches))
    with staged_folder(config.output, config.force) as staging:
        entries, variant_keys = _export_components(prepared, staging, config, rep)
        source = prepared.source
        manifest = Manifest(
            stage=Stage.EXPORTED,
            created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            versions=library_versions(),
            source=source.description,
            pipeline=pipeline_section(source),
            scheduler=SchedulerSection(
                name=source.scheduler_name,
                config=source.scheduler_config,
                default_steps=source.default_steps,
                note=source.scheduler_note,
            ),
            components=entries,
            patches=[r.to_dict() for r in prepared.applied.reports],
            tokenizer=_copy_tokenizer(source.tokenizer_dir, staging, "tokenizer"),
            tokenizer_2=_copy_tokenizer(
                source.tokenizer_2_dir, staging, "tokenizer_2", source.extras.get("t5_window")
            ),
            step_plan=prepared.applied.step_plan(variant_keys),
        )
        write_manifest(staging, manifest)
    return config.output


def _export_components(
    prepared: PreparedModel, staging: Path, config: ExportConfig, rep: Reporter
) -> tuple[dict[str, ComponentEntry], dict[str, str]]:
    """Each component's graph (the denoiser once per variant of a stepped patch, the
    variants then sharing one weight file) and its manifest entry."""
    applied = prepared.applied
    entries: dict[str, ComponentEntry] = {}
    variant_keys: dict[str, str] = {BASE: "denoiser"}
    for role, component in prepared.components.items():
        stepped = applied.stepped if role == "denoiser" else None
        variants = applied.variants() if stepped is not None else [BASE]
        if stepped is not None:
            variant_keys = {}
        graphs: list[Path] = []
        for index, variant in enumerate(variants):
            key, rel = role, f"{role}/model.onnx"
            if stepped is not None:
                stepped.set_variant(variant)
                if index:
                    key, rel = f"{role}@{variant}", f"{role}/model@{variant}.onnx"
                variant_keys[variant] = key
            label = f"{role} ({variant})" if stepped is not None else role
            # a variant that carries state between steps takes and emits it as tensors
            part = with_state(component, stepped, variant) if stepped is not None else component
            with rep.task(f"export {label}"):
                export_component(part, staging / rel, config.opset)
            last = index == len(variants) - 1  # the module's last use: its weights can go
            checks = _verify(part, staging / rel, label, config.verify, rep, release=last)
            entries[key] = part.spec.manifest_entry(rel, checks)
            graphs.append(staging / rel)
        if stepped is not None:
            stepped.set_variant(variants[0])
            sizes = share_weights(graphs)
            rep.note(
                f"{len(graphs)} denoiser variants share one weight file "
                f"({sizes['stored_bytes'] / 1e6:.1f} MB stored for "
                f"{sizes['referenced_bytes'] / 1e6:.1f} MB referenced)"
            )
    return entries, variant_keys


def _copy_tokenizer(
    folder: Path | None, staging: Path, name: str, window: int | None = None
) -> TokenizerSection | None:
    """The tokenizer files the runtime reads, written under ``name``: CLIP's BPE pair, or,
    where the source exported a T5 encoder at a ``window``, the T5 tokenizer's tokenizer.json
    (read through the ``tokenizers`` library)."""
    if folder is None:
        return None
    if window is not None:
        from difforge.sources.tokenizer_json import write_json_tokenizer

        t5 = write_json_tokenizer(folder, staging / name)
        return TokenizerSection(
            "json",
            f"{name}/tokenizer.json",
            max_length=window,
            pad_token=t5.pad_token,
        )
    settings = write_clip_tokenizer(folder, staging / name)
    return TokenizerSection(
        "clip-bpe",
        f"{name}/vocab.json",
        f"{name}/merges.txt",
        max_length=settings.max_length,
        pad_token=settings.pad_token,
    )


def _verify(
    component: Component, path: Path, label: str, enabled: bool, rep: Reporter, release: bool
) -> list[dict[str, Any]]:
    """PyTorch's references, then (the weights released after the module's last use, so
    that PyTorch's and ONNX Runtime's copies never sit side by side) ONNX Runtime's check."""
    if not enabled:
        if release:
            release_weights(component.module)
        return []
    with rep.task(f"verify {label} on ONNX Runtime at min/opt/max shapes"):
        refs = reference_outputs(component)
        if release:
            release_weights(component.module)
        checks = check_outputs(component.spec, path, refs)
    worst = max(c["max_rel"] for c in checks)
    rep.note(f"{label}: max relative error {worst:.1e} (tolerance {component.spec.tolerance:.0e})")
    return checks


def pipeline_section(source: SourceModel) -> PipelineSection:
    classes = source.kind == "class-to-image"
    return PipelineSection(
        type=source.kind,
        latent_channels=source.latent_channels,
        vae_scale_factor=source.vae_scale_factor,
        scaling_factor=source.scaling_factor,
        resolution=source.resolution,
        default_guidance=source.default_guidance,
        num_classes=source.num_classes if classes else 0,
        null_class=source.null_class if classes else 0,
        pixel_space=source.vae is None and source.kind != "flux",
        guidance_input=bool(source.extras.get("guidance_input")),
        zero_negative=bool(source.extras.get("zero_negative")),
    )
