"""A readable, plain-text view of a manifest for ``difforge info``."""

from __future__ import annotations

from typing import Any

from difforge.artifact.interval_rule import IntervalRule
from difforge.artifact.manifest import ComponentEntry, EngineRecord, Manifest
from difforge.artifact.step_plan import STEP_VARIANT, NoiseDampedGuidance, StepPlan
from difforge.errors import DifforgeError


def _shape(dims: list[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _runs(schedule: list[str]) -> str:
    """['a', 'a', 'b'] -> 'a ×2, b ×1' (consecutive runs)."""
    out: list[tuple[str, int]] = []
    for name in schedule:
        if out and out[-1][0] == name:
            out[-1] = (name, out[-1][1] + 1)
        else:
            out.append((name, 1))
    return ", ".join(f"{name} ×{count}" for name, count in out)


def describe(m: Manifest) -> str:
    lines: list[str] = []
    src = m.source
    name = src.get("name") or src.get("path", "?")
    lines.append(
        f"difforge artifact ({m.stage.value}), format {m.format_version}, created {m.created}"
    )
    lines.append(f"source: {src.get('type', '?')} {name}")
    if src.get("random_weights"):
        lines.append(f"  WEIGHTS ARE RANDOM: {src.get('weights', '')}")
    pipe, res = m.pipeline, m.pipeline.resolution
    space = ", pixel space (no VAE)" if pipe.pixel_space else ""
    lines.append(
        f"pipeline: {pipe.type}{space}; resolution {res.min}..{res.max} px "
        f"(multiple of {res.multiple}, default {res.default})"
    )
    how = " (an input of the denoiser: guidance-distilled)" if pipe.guidance_input else ""
    lines.append(
        f"sampler: {m.scheduler.name}, default {m.scheduler.default_steps} steps, "
        f"guidance {pipe.default_guidance}{how}"
    )
    if m.scheduler.note:
        lines.append(f"  note: {m.scheduler.note}")
    if not any(c.engine for c in m.components.values()):
        lines.append("engine: none (an export folder; `difforge build` makes an engine)")
    lines.append("components:")
    for role, c in m.components.items():
        lines.extend(_component(role, c))
    lines.extend(_patches(m))
    if m.step_plan is not None:
        lines.extend(_plan(m.step_plan))
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in m.versions.items()))
    total = sum(f.bytes for f in m.files.values())
    lines.append(f"files: {len(m.files)} ({total / 1e6:.1f} MB), sha256 checked")
    return "\n".join(lines)


def _component(role: str, c: ComponentEntry) -> list[str]:
    lines = [f"  {role}: {c.file} ({c.precision})"]
    for t in c.inputs:
        lines.append(f"    in  {t.name:<22} {t.dtype:<8} {_shape(t.shape)}")
    for t in c.outputs:
        lines.append(f"    out {t.name:<22} {t.dtype:<8} {_shape(t.shape)}")
    axes = ", ".join(f"{k} {v[0]}/{v[1]}/{v[2]}" for k, v in c.axes.items())
    lines.append(f"    axes (min/opt/max): {axes}")
    if c.verification:
        worst = max(float(v.get("max_rel", 0.0)) for v in c.verification)
        lines.append(f"    verified vs PyTorch at min/opt/max: max rel error {worst:.1e}")
    if c.engine is not None:
        lines.extend(_engine(c.engine))
    return lines


def _engine(e: EngineRecord) -> list[str]:
    threads = e.settings.get("intra_op_num_threads", 0) or "all"
    providers = e.settings.get("providers")
    where = f" {providers}" if providers else ""
    lines = [f"    engine: {e.backend}{where}, threads {threads}"]
    if e.passes:
        parts = []
        for p in e.passes:
            fusions = p.details.get("fusions") or {}
            done = ", ".join(f"{v} {k}" for k, v in fusions.items())
            parts.append(f"{p.name} ({done})" if done else p.name)
        lines.append(f"    passes: {'; '.join(parts)}")
    else:
        lines.append("    passes: none")
    for op, mode in e.custom_ops.items():
        kept = "kept as a plugin node" if mode == "plugin" else "inlined as standard ops"
        lines.append(f"    custom op {op}: {kept}")
    lines.extend(_quality(e.quality))
    return lines


def _quality(q: dict[str, Any] | None) -> list[str]:
    """A lowered precision: what was lowered, and its gate as measured."""
    if not q:
        return []
    method = f", {q['calibration_method']} calibration" if q.get("calibration_method") else ""
    if q.get("quantizer") == "backend":
        method += " (the backend's own quantizer)"
    lines = [f"    {q.get('precision')}: {q.get('nodes_lowered')} nodes lowered{method}"]
    if q.get("groups_kept_fp32"):
        lines.append(f"    kept in fp32: {', '.join(map(str, q['groups_kept_fp32']))}")
    gate = q.get("gate")
    if not isinstance(gate, dict):
        lines.append("    quality gate: none (built with --no-gate)")
        return lines
    means = gate.get("mean") or {}
    values = ", ".join(f"{k} {float(v):.4f}" for k, v in means.items())
    verdict = "passed" if gate.get("passed") else "FAILED"
    lines.append(
        f"    quality gate ({gate.get('metric')} >= {gate.get('threshold')} per timestep "
        f"bucket, {gate.get('records')} held-out steps): {verdict}; {values}"
    )
    return lines


def _patches(m: Manifest) -> list[str]:
    if not m.patches:
        return ["patches: none"]
    lines = ["patches:"]
    for p in m.patches:
        lines.append(f"  {p.get('patch')}: {p.get('count')} modules replaced")
        options = {k: v for k, v in p.get("options", {}).items() if v is not None}
        lines.append(f"    options: {options}")
        lines.extend(f"    note: {n}" for n in p.get("notes", []))
    return lines


def _plan(plan: StepPlan) -> list[str]:
    lines = ["step plan:"]
    lines.append("  variants: " + ", ".join(f"{k} -> {v}" for k, v in plan.variants.items()))
    for rule in plan.rules:
        if isinstance(rule, IntervalRule):
            lines.append(f"  {rule.variant}: all but the refresh steps ({rule.describe()})")
        else:
            lines.append(f"  {rule.variant}: steps {_span(rule.start, rule.end)}")
    for steps in (20, 50):
        try:
            lines.append(f"  at {steps} steps: {_runs(plan.schedule(steps))}")
        except DifforgeError as err:
            lines.append(f"  at {steps} steps: cannot run ({err})")
    for name, spec in plan.inputs.items():
        lines.append(f"  input {name}: per-step table '{spec.table}', seed {spec.seed}")
    same = [k for k, v in plan.carry.items() if k == v]
    if same:
        lines.append(f"  carried from the step that emits them to later ones: {', '.join(same)}")
    renamed = [k for k, v in plan.carry.items() if k != v]
    if renamed and all(plan.carry[k] == k + "_next" for k in renamed):
        lines.append(
            f"  carried: each call's NAME_next feeds NAME of the next: {', '.join(renamed)}"
        )
    else:
        for name in renamed:
            output = plan.carry[name]
            lines.append(f"  carried: output {output} of each step feeds {name} of the next")
    if plan.selection is not None:
        s = plan.selection
        lines.append(
            f"  tokens: {s.variant} recomputes {s.ratio:g} of the {s.patch}x{s.patch} tokens "
            f"({s.input}), chosen from the previous step's change ({s.metric}, starvation "
            f"{s.starvation:g})"
        )
    if plan.prior_noise is not None:
        p = plan.prior_noise
        lines.append(f"  prior noise: x += {p.scale:g}·x_T before each step with t < {p.below:g}")
    if plan.guidance is not None:
        lines.append(f"  guidance: {_guidance(plan.guidance)}")
    return lines


def _span(start: float, end: float) -> str:
    """A step rule's fractions of the step count, as the runtime applies them."""
    return f"[{start:g}·N, {end:g}·N)"


def _guidance(mode: NoiseDampedGuidance) -> str:
    strong = "the step's variant" if mode.strong == STEP_VARIANT else mode.strong
    weak = ", ".join(f"{r.variant} on {_span(r.start, r.end)}" for r in mode.weak_rules)
    return (
        f"noise-damped CFG on steps {_span(mode.start, mode.end)} "
        f"(guidance direction: {strong}; unconditional base: {weak or mode.weak})"
    )

