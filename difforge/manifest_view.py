"""A readable, plain-text view of a manifest for ``difforge info``."""

from __future__ import annotations

from typing import Any

from difforge.runtime.manifest import Manifest


def _shape(dims: list[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _runs(schedule: list[str]) -> str:
    """['a', 'a', 'b'] -> 'a ×2, b ×1' (consecutive runs)."""
    out: list[str] = []
    for name in schedule:
        if out and out[-1].rsplit(" ×", 1)[0] == name:
            head, count = out[-1].rsplit(" ×", 1)
            out[-1] = f"{head} ×{int(count) + 1}"
        else:
            out.append(f"{name} ×1")
    return ", ".join(out)


def describe(m: Manifest) -> str:
    lines: list[str] = []
    src = m.source
    name = src.get("name") or src.get("path", "?")
    lines.append(f"difforge artifact ({m.stage}), format {m.format_version}, created {m.created}")
    lines.append(f"source: {src.get('type', '?')} {name}")
    if src.get("random_weights"):
        lines.append(f"  WEIGHTS ARE RANDOM: {src.get('weights', '')}")
    pipe = m.pipeline
    res = pipe["resolution"]
    space = ", pixel space (no VAE)" if pipe.get("pixel_space") else ""
    lines.append(
        f"pipeline: {pipe['type']}{space}; resolution {res['min']}..{res['max']} px "
        f"(multiple of {res['multiple']}, default {res['default']})"
    )
    how = " (an input of the denoiser: guidance-distilled)" if pipe.get("guidance_input") else ""
    lines.append(
        f"sampler: {m.scheduler['name']}, default {m.scheduler.get('default_steps')} steps, "
        f"guidance {pipe.get('default_guidance')}{how}"
    )
    lines.append(f"precision: {m.precision}")
    if m.engine:
        sess = m.engine.get("session", {})
        lines.append(
            f"engine: {m.engine['backend']} {m.engine.get('providers')}, "
            f"threads {sess.get('intra_op_num_threads', 0) or 'all'}, "
            f"graph optimisation {sess.get('graph_optimization_level')}"
        )
    else:
        lines.append("engine: none (an export folder; `difforge build` makes an engine)")
    lines.append("components:")
    for role, c in m.components.items():
        lines.append(f"  {role}: {c.file}")
        for t in c.inputs:
            lines.append(f"    in  {t.name:<22} {t.dtype:<8} {_shape(t.shape)}")
        for t in c.outputs:
            lines.append(f"    out {t.name:<22} {t.dtype:<8} {_shape(t.shape)}")
        axes = ", ".join(f"{k} {v[0]}/{v[1]}/{v[2]}" for k, v in c.axes.items())
        lines.append(f"    axes (min/opt/max): {axes}")
        if c.verification:
            worst = max(v["max_rel"] for v in c.verification)
            lines.append(f"    verified vs PyTorch at min/opt/max: max rel error {worst:.1e}")
        if m.engine and role in m.engine.get("passes", {}):
            p = m.engine["passes"][role]
            fused = ", ".join(f"{v} {k}" for k, v in p.get("fusions", {}).items()) or "none"
            lines.append(
                f"    passes: {', '.join(p.get('passes', [])) or 'none'}; fusions: {fused}"
            )
    if m.patches:
        lines.append("patches:")
        for p in m.patches:
            lines.append(f"  {p.get('patch')}: {p.get('count')} modules replaced")
            options = {k: v for k, v in p.get("options", {}).items() if v is not None}
            lines.append(f"    options: {options}")
            lines.extend(f"    note: {n}" for n in p.get("notes", []))
    else:
        lines.append("patches: none")
    if m.step_plan:
        from difforge.runtime.step_plan import StepPlan

        plan = StepPlan.from_manifest(m.step_plan)
        lines.append("step plan:")
        lines.append("  variants: " + ", ".join(f"{k} -> {v}" for k, v in plan.variants.items()))
        for rule in plan.rules:
            lines.append(f"  {rule['variant']}: steps {_span(rule)}")
        for steps in (20, 50):
            lines.append(f"  at {steps} steps: {_runs(plan.schedule(steps))}")
        for name, spec in plan.inputs.items():
            lines.append(
                f"  input {name}: per-step table '{spec['generator']}', seed {spec['seed']}"
            )
        if plan.guidance:
            lines.append(f"  guidance: {_guidance(plan.guidance)}")
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in m.versions.items()))
    total = sum(f["bytes"] for f in m.files.values())
    lines.append(f"files: {len(m.files)} ({total / 1e6:.1f} MB), sha256 checked")
    return "\n".join(lines)


def _span(rule: dict[str, Any]) -> str:
    """A step rule's fractions of the step count, as the runtime applies them."""
    return f"[{float(rule.get('from', 0)):g}·N, {float(rule['to']):g}·N)"


def _guidance(mode: dict[str, Any]) -> str:
    if mode.get("mode") != "ndcfg":
        return str(mode)
    strong = "the step's variant" if mode.get("strong") == "step_rules" else mode.get("strong")
    weak = (
        ", ".join(f"{r['variant']} on {_span(r)}" for r in mode.get("weak_rules") or [])
        or mode.get("weak")
    )
    return (
        f"noise-damped CFG on steps {_span(mode)} "
        f"(guidance direction: {strong}; unconditional base: {weak})"
    )
