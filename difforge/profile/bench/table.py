"""Bench results -> the Markdown block written into docs/perf.md."""

from __future__ import annotations

from typing import Any

from difforge.profile.machine import flag_summary


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def verdict(rows: list[dict[str, Any]]) -> str:
    """Whether difforge's fp32 row is at least as fast (p50) as every other fp32 row."""
    ours = next((r for r in rows if r["name"].startswith("difforge") and "stats" in r), None)
    if ours is None or ours["precision"] != "fp32":
        return "difforge row missing"
    others = [r for r in rows if r is not ours and r.get("fp32") and "stats" in r]
    slower = [r["name"] for r in others if r["stats"]["p50"] < ours["stats"]["p50"]]
    return "fastest fp32 row" if not slower else "slower than " + ", ".join(slower)


#: difforge's best gate-passing row against OpenVINO's default precision from a plain export
GOAL = 1.25


def goal(rows: list[dict[str, Any]]) -> str:
    """difforge's fastest row of known quality (fp32, or lowered behind a passed gate)
    against OpenVINO's default precision, and whether it reaches :data:`GOAL`."""
    ours = [
        r
        for r in rows
        if r["name"].startswith("difforge") and "stats" in r and r.get("gated", True)
    ]
    base = next((r for r in rows if r["name"] == "OpenVINO default" and "stats" in r), None)
    if not ours or base is None:
        return "no OpenVINO default row to compare with"
    best = min(ours, key=lambda r: r["stats"]["p50"])
    ratio = base["stats"]["p50"] / best["stats"]["p50"]
    met = "met" if ratio >= GOAL else "missed"
    return (
        f"best difforge row {best['name']} is {ratio:.2f}× OpenVINO default (goal {GOAL}×: {met})"
    )


def render_block(result: dict[str, Any]) -> str:
    m = result["machine"]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items())
    lines = [
        f"Machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs, {m['threads']} threads "
        f"for every runtime; flags: {flag_summary(m)}.",
        f"Libraries: {libs}. Python {m['python']}, {m['os']}.",
        f"Load average (1/5/15 min) at start {', '.join(f'{x:.1f}' for x in m['load_average'])}"
        f", at end {', '.join(f'{x:.1f}' for x in result.get('load_average_after', []))}: "
        "other work shared these cores, so read the ratios more than the absolute times.",
        "",
        f"Denoiser of `{result.get('model', result['config']['preset'])}`, batch "
        f"{result['config']['batch']}, "
        f"{result['config']['runs']} timed calls per row after warm-up, rows alternating call "
        "by call (rotating order). Spread = p10–p90. Ratio = PyTorch eager p50 / row p50 "
        "(> 1 is faster). Error = max |row − PyTorch eager fp32|.",
    ]
    for block in result["latents"]:
        lines += [
            "",
            f"### {block['latent']}² latents ({block['pixels']}×{block['pixels']} px)",
            "",
            "| runtime | precision | p50 ms | p10–p90 ms | vs eager | max error | note |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in block["rows"]:
            if "stats" not in row:
                lines.append(
                    f"| {row['name']} | {row['precision']} | – | – | – | – | {row['note']} |"
                )
                continue
            s = row["stats"]
            ratio = f"{row['ratio']:.2f}×" if row.get("ratio") else "–"
            lines.append(
                f"| {row['name']} | {row['precision']} | {_ms(s['p50'])} | "
                f"{_ms(s['p10'])}–{_ms(s['p90'])} | {ratio} | {row['max_abs_error']:.1e} | "
                f"{row['note']} |"
            )
        lines += ["", f"difforge fp32: **{verdict(block['rows'])}**; {goal(block['rows'])}."]
    return "\n".join(lines)
