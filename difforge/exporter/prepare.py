"""Source + patches -> a prepared model: what the exporter traces and ``eval`` runs in PyTorch."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from difforge._progress import Reporter, SilentReporter
from difforge.artifact.schedulers import create_scheduler, packed_seq_len
from difforge.artifact.step_plan import BASE, StepPlan
from difforge.config import ExportConfig, ResolutionRange
from difforge.errors import DifforgeError
from difforge.exporter.components import Component, components_for
from difforge.patches import (
    ExtraInputSpec,
    Patch,
    PatchReport,
    apply_patches,
    create_patch,
    parse_patch_arg,
)
from difforge.patches.stepped import SteppedPatch
from difforge.sources import SourceModel, load_source
from difforge.sources.base import Resolution

#: limits on what an export may be asked for, checked before any work (far above what the
#: models difforge knows are used at; memory runs out before them on most machines, which
#: verification then reports)
MAX_RESOLUTION = 8192
MAX_BATCH = 64


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
    patches: list[Patch] = field(default_factory=list)
    reports: list[PatchReport] = field(default_factory=list)
    #: The one patch (if any) whose behaviour changes with the step: exported per variant.
    stepped: SteppedPatch | None = None

    def extra_inputs(self) -> list[ExtraInputSpec]:
        return [spec for r in self.reports for spec in r.extra_inputs.values()]

    def wrapper_options(self) -> dict[str, Any]:
        """What the denoiser wrapper must pass the patched model (every patch's, merged)."""
        return {k: v for p in self.patches for k, v in p.wrapper_options().items()}

    def variants(self) -> list[str]:
        return self.stepped.variants() if self.stepped is not None else [BASE]

    def step_plan(self, variant_keys: dict[str, str]) -> StepPlan | None:
        """The manifest's step plan: variants and their rules, per-step inputs, guidance."""
        inputs = {spec.name: spec.step_input() for spec in self.extra_inputs()}
        if self.stepped is None and not inputs:
            return None
        if self.stepped is None:
            return StepPlan(variants=variant_keys, inputs=inputs)
        return StepPlan(
            variants=variant_keys,
            rules=tuple(self.stepped.step_rules()),
            inputs=inputs,
            guidance=self.stepped.guidance(),
            carry=self.stepped.carry(),
            prior_noise=self.stepped.prior_noise(),
            batched={
                v: n for v in self.stepped.variants() if (n := self.stepped.batch_steps(v)) > 1
            },
            selection=self.stepped.token_selection(),
        )


def check_config(config: ExportConfig) -> None:
    """The export's numbers, within their documented ranges, before any model is loaded."""
    if not 1 <= config.max_batch <= MAX_BATCH:
        raise DifforgeError(f"--max-batch must be in [1, {MAX_BATCH}], got {config.max_batch}")
    if not 0 <= config.seed < 1 << 63:
        raise DifforgeError(f"--seed must be in [0, 2^63 - 1], got {config.seed}")
    res = config.resolution
    for value in (res.min, res.default, res.max):
        if value is not None and value > MAX_RESOLUTION:
            raise DifforgeError(
                f"--resolution {value} is above the largest difforge builds for, {MAX_RESOLUTION}"
            )


def create_patches(requests: list[str]) -> list[Patch]:
    """Parse and validate every --patch before any model is loaded."""
    created = [create_patch(parse_patch_arg(text)) for text in requests]
    names = [patch.name for patch in created]
    for name in dict.fromkeys(names):
        if names.count(name) > 1:
            raise DifforgeError(f"patch {name!r} is given {names.count(name)} times; give it once")
    return created


def check_scheduler(source: SourceModel) -> None:
    """The runtime must be able to sample with the model's scheduler: say so now, not at the
    first ``difforge run``."""
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


def apply(source: SourceModel, created: list[Patch]) -> AppliedPatches:
    if not created:
        return AppliedPatches()
    res = source.resolution
    for patch in created:
        # Resolution-aware patches (RAU-Net's T1/T2 ratios) default to the build's resolution.
        patch.bind_resolution(res.min, res.default, res.max)
    reports = apply_patches(source.denoiser, created)
    stepped = [p for p in created if isinstance(p, SteppedPatch)]
    if len(stepped) > 1:
        names = ", ".join(p.name for p in stepped)
        raise DifforgeError(f"only one step-dependent patch per model is supported (got {names})")
    selection = stepped[0].token_selection() if stepped else None
    if selection is not None and source.scheduler_name not in selection.samplers:
        raise DifforgeError(
            f"patch {stepped[0].name!r} is the authors' method for flow-matching models (its "
            f"token score is the flow step's change); {source.name} samples with "
            f"{source.scheduler_name}"
        )
    return AppliedPatches(list(created), reports, stepped[0] if stepped else None)


@dataclass
class PreparedModel:
    """A source with its patches applied and its exportable components: what the exporter
    turns into ONNX, and what ``difforge eval`` runs in PyTorch beside the engine."""

    source: SourceModel
    applied: AppliedPatches
    components: dict[str, Component]


def prepare_model(
    config: ExportConfig, reporter: Reporter | None = None, patches: list[Patch] | None = None
) -> PreparedModel:
    """Load ``config``'s source, apply its patches (or the already created ``patches``)."""
    rep = reporter or SilentReporter()
    check_config(config)
    created = patches if patches is not None else create_patches(config.patches)
    with rep.task(f"load {config.preset or config.model}"):
        source = load_source(config.preset, config.model, config.seed, config.scheduler)
    source = replace(source, resolution=resolve_resolution(source.resolution, config.resolution))
    check_scheduler(source)
    if source.random_weights:
        rep.note(f"{source.name}: {source.description['weights']}")
    for note in [*source.notes, source.scheduler_note]:
        if note:
            rep.note(f"note: {note}")
    applied = apply(source, created)
    for report in applied.reports:
        rep.note(f"patch {report.patch}: replaced {report.count} modules")
        for note in report.notes:
            rep.note(f"  {note}")
    components = components_for(
        source, config.max_batch, applied.extra_inputs(), applied.wrapper_options()
    )
    if applied.stepped is not None:
        check_state_levels(applied.stepped, components["denoiser"].spec.axes)
    return PreparedModel(source, applied, components)


def check_state_levels(stepped: SteppedPatch, axes: dict[str, Any]) -> None:
    """A state tensor kept at 1/d of the latent needs latent sizes that are multiples of d
    (torch.export ties its size to the latent's; a U-Net's stride-2 convolutions round odd
    sizes up): say so before anything is exported."""
    for variant in stepped.variants():
        for state in [*stepped.state_inputs(variant), *stepped.state_outputs(variant)]:
            for name in ("height", "width"):
                axis, d = axes[name], state.divisor
                if (axis.multiple % d if axis.min != axis.max else axis.min % d) == 0:
                    continue
                span = f"{axis.min}" if axis.min == axis.max else (
                    f"{axis.min} to {axis.max} in steps of {axis.multiple}"
                )
                raise DifforgeError(
                    f"patch {stepped.name!r}: {state.name} lives at 1/{d} of the latent, which "
                    f"needs latent sizes that are multiples of {d}, and this build's latent "
                    f"{name} is {span}; use patch options that keep it at a finer level, or one "
                    f"resolution whose latent "
                    f"size is a multiple of {d}"
                )

