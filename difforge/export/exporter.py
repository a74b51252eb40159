"""``difforge export``: source -> patches -> one verified ONNX graph per component -> folder."""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import onnx

from difforge._fs import check_target, staged_folder
from difforge._progress import Reporter, SilentReporter
from difforge.config import ExportConfig, ResolutionRange
from difforge.errors import DifforgeError
from difforge.export.components import Component, components_for
from difforge.export.onnx_export import export_component
from difforge.export.shared_weights import share_weights
from difforge.export.sources import SourceModel, load_source
from difforge.export.sources.base import Resolution
from difforge.export.verify import verify_component
from difforge.runtime.manifest import ComponentEntry, Manifest, write_manifest
from difforge.runtime.step_plan import StepPlan
from difforge.versions import library_versions


def resolve_resolution(base: Resolution, wanted: ResolutionRange) -> Resolution:
    """The source's range, narrowed or widened as asked; every bound a multiple of its factor."""
    m = base.multiple
    asked = [v for v in (wanted.min, wanted.default, wanted.max) if v is not None]
    if base.min == base.max and any(v != base.min for v in asked):
        raise DifforgeError(f"this model runs at {base.min} px only (its size is fixed)")
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


@dataclass
class AppliedPatches:
    reports: list[Any] = field(default_factory=list)
    #: The one patch (if any) whose behaviour changes with the step: exported per variant.
    stepped: Any = None

    def extra_inputs(self) -> list[Any]:
        return [spec for r in self.reports for spec in r.extra_inputs.values()]


def _create_patches(requests: list[str]) -> list[Any]:
    """Parse and validate every --patch before any model is loaded."""
    if not requests:
        return []
    from difforge.export import patches

    created = [patches.create_patch(patches.parse_patch_arg(text)) for text in requests]
    names = [patch.name for patch in created]
    for name in dict.fromkeys(names):
        if names.count(name) > 1:
            raise DifforgeError(f"patch {name!r} is given {names.count(name)} times; give it once")
    return created


def _check_scheduler(source: SourceModel) -> None:
    """The runtime must be able to sample with the model's scheduler: say so now, not at the
    first ``difforge run``."""
    from difforge.runtime.schedulers import create_scheduler, packed_seq_len

    side = source.resolution.default
    try:
        create_scheduler(
            source.scheduler_name,
            dict(source.scheduler_config),
            source.default_steps,
            image_seq_len=packed_seq_len(side, side, source.vae_scale_factor),
        )
    except DifforgeError as err:
        raise DifforgeError(f"{source.name}: its scheduler cannot be run: {err}") from None


def _apply_patches(source: SourceModel, created: list[Any]) -> AppliedPatches:
    if not created:
        return AppliedPatches()
    res = source.resolution
    for patch in created:
        # Resolution-aware patches (RAU-Net's T1/T2 ratios) default to the build's resolution.
        patch.bind_resolution(res.min, res.default, res.max)
    from difforge.export.patches import apply_patches

    reports = apply_patches(source.denoiser, created)
    # A patch knows its variants only once it has seen the model it patches.
    stepped = [p for p in created if len(getattr(p, "variants", lambda: [])()) > 1]
    if len(stepped) > 1:
        names = ", ".join(p.name for p in stepped)
        raise DifforgeError(f"only one step-dependent patch per model is supported (got {names})")
    return AppliedPatches(reports=reports, stepped=stepped[0] if stepped else None)


def _step_plan(applied: AppliedPatches, variant_keys: dict[str, str]) -> StepPlan | None:
    inputs = {
        spec.name: {
            "generator": spec.generator,
            "seed": "run",
            "dtype": spec.dtype,
            "shape": list(spec.shape),
        }
        for spec in applied.extra_inputs()
    }
    if applied.stepped is None and not inputs:
        return None
    plan = StepPlan(variants=variant_keys, inputs=inputs)
    if applied.stepped is not None:
        plan.rules = list(applied.stepped.step_rules())
        guidance = getattr(applied.stepped, "guidance", lambda: None)()
        plan.guidance = guidance or None
    return plan


@dataclass
class PreparedModel:
    """A source with its patches applied and its exportable components: what the exporter
    turns into ONNX, and what ``difforge eval`` runs in PyTorch beside the engine."""

    source: SourceModel
    applied: AppliedPatches
    components: dict[str, Component]


def prepare_model(
    config: ExportConfig, reporter: Reporter | None = None, patches: list[Any] | None = None
) -> PreparedModel:
    """Load ``config``'s source, apply its patches (or the already created ``patches``)."""
    rep = reporter or SilentReporter()
    if config.max_batch < 1:
        raise DifforgeError(f"--max-batch must be at least 1, got {config.max_batch}")
    created = patches if patches is not None else _create_patches(config.patches)
    with rep.task(f"load {config.preset or config.model}"):
        source = load_source(config.preset, config.model, config.seed)
    source = replace(source, resolution=resolve_resolution(source.resolution, config.resolution))
    _check_scheduler(source)
    if source.random_weights:
        rep.note(f"{source.name}: {source.description['weights']}")
    applied = _apply_patches(source, created)
    if any(r.patch == "clear" for r in applied.reports) and source.kind == "flux":
        # CLEAR needs the token grid inside FLUX's attention; the wrapper passes it.
        source.extras["grid_kwarg"] = "clear_grid"
    for report in applied.reports:
        rep.note(f"patch {report.patch}: replaced {report.count} modules")
        for note in report.notes:
            rep.note(f"  {note}")
    components = components_for(source, config.max_batch, applied.extra_inputs())
    return PreparedModel(source, applied, components)


def export(config: ExportConfig, reporter: Reporter | None = None) -> Path:
    """Export every component of a model to ONNX, verify it, and write an export folder."""
    rep = reporter or SilentReporter()
    if config.max_batch < 1:
        raise DifforgeError(f"--max-batch must be at least 1, got {config.max_batch}")
    newest = onnx.defs.onnx_opset_version()
    if not 1 <= config.opset <= newest:
        raise DifforgeError(
            f"--opset {config.opset} does not exist (the installed onnx knows 1 to {newest})"
        )
    check_target(config.output, config.force)
    created = _create_patches(config.patches)
    prepared = prepare_model(config, rep, created)
    source, applied, components = prepared.source, prepared.applied, prepared.components
    entries: dict[str, ComponentEntry] = {}
    variants = applied.stepped.variants() if applied.stepped is not None else ["base"]
    variant_keys: dict[str, str] = {}
    with staged_folder(config.output, config.force) as staging:
        for role, component in components.items():
            stepped = role == "denoiser" and applied.stepped is not None
            graphs: list[Path] = []
            for index, variant in enumerate(variants if stepped else ["base"]):
                key, rel = role, f"{role}/model.onnx"
                if stepped:
                    applied.stepped.set_variant(variant)
                    if index:
                        key, rel = f"{role}@{variant}", f"{role}/model@{variant}.onnx"
                    variant_keys[variant] = key
                label = f"{role} ({variant})" if stepped else role
                with rep.task(f"export {label}"):
                    export_component(component, staging / rel, config.opset)
                checks = _verify(component, staging / rel, label, config.verify, rep)
                entries[key] = component.spec.manifest_entry(rel, checks)
                graphs.append(staging / rel)
            if stepped:
                applied.stepped.set_variant(variants[0])
                sizes = share_weights(graphs)
                rep.note(
                    f"{len(graphs)} denoiser variants share one weight file "
                    f"({sizes['stored_bytes'] / 1e6:.1f} MB stored for "
                    f"{sizes['referenced_bytes'] / 1e6:.1f} MB referenced)"
                )
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
            patches=[r.to_dict() for r in applied.reports],
            precision="fp32",
            engine=None,
            tokenizer=tokenizer,
        )
        plan = _step_plan(applied, variant_keys or {"base": "denoiser"})
        manifest.step_plan = plan.to_dict() if plan is not None else None
        write_manifest(staging, manifest)
    return config.output


def _verify(
    component: Component, path: Path, label: str, enabled: bool, rep: Reporter
) -> list[dict[str, Any]]:
    if not enabled:
        return []
    with rep.task(f"verify {label} on ONNX Runtime at min/opt/max shapes"):
        checks = verify_component(component, path)
    worst = max(c["max_rel"] for c in checks)
    rep.note(f"{label}: max relative error {worst:.1e} (tolerance {component.spec.tolerance:.0e})")
    return checks


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
    if source.vae is None and source.kind != "flux":
        section["pixel_space"] = True
    if source.extras.get("guidance_input"):
        section["guidance_input"] = True
    return section
