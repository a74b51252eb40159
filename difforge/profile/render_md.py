"""report.json -> report.md: the tables people paste into design docs."""

from __future__ import annotations

from typing import Any

from difforge.profile.plots import STAGE_LABELS


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.0f} MiB"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def latency_table(latency: dict[str, Any]) -> str:
    rows = []
    total = latency["total"]["p50"]
    for name, summary in [*latency["stages"].items(), ("other", latency["other"])]:
        rows.append(
            [
                STAGE_LABELS.get(name, name),
                ms(summary["p50"]),
                ms(summary["p90"]),
                ms(summary["p99"]),
                ms(summary["min"]),
                f"{summary['p50'] / total:.0%}",
            ]
        )
    call = latency["denoiser_call"]
    rows.append(
        [
            "denoiser, per call",
            ms(call["p50"]),
            ms(call["p90"]),
            ms(call["p99"]),
            ms(call["min"]),
            "",
        ]
    )
    t = latency["total"]
    rows.append(["**total**", ms(t["p50"]), ms(t["p90"]), ms(t["p99"]), ms(t["min"]), "100%"])
    return table(["stage", "p50 ms", "p90 ms", "p99 ms", "min ms", "share of p50"], rows)


def ops_table(rows: list[dict[str, Any]], top: int = 15) -> str:
    body = [
        [r["component"], r["name"], ms(r["seconds"]), f"{r['share']:.1%}", str(r["calls"])]
        for r in rows[:top]
    ]
    return table(["component", "name", "ms", "share", "calls"], body)


def attention_lines(rows: list[dict[str, Any]]) -> list[str]:
    """A paragraph per component with self-attention time (``ops.attention``, optional)."""
    out: list[str] = []
    for r in rows:
        out += [
            "",
            f"Self-attention (`{r['module']}` modules) in the {r['component']}: attention core "
            f"{ms(r['core_s'])} ms, q/k/v/out projections {ms(r['proj_s'])} ms "
            f"({r['share']:.1%} of its kernel time).",
        ]
    return out


#: backend -> where its per-op times come from
PROFILERS = {
    "ort": "ONNX Runtime profiler",
    "openvino": "OpenVINO per-node counters of the execution graph",
}


def roofline_line(roof: dict[str, Any] | None) -> str:
    if roof is None:
        return (
            "Not measured: FLOPs are counted on ONNX graphs, and this artifact's denoiser is "
            "another engine's format."
        )
    unresolved = roof.get("unresolved_nodes", 0)
    missing = f"; {unresolved} nodes without shapes" if unresolved else ""
    return (
        f"{roof['flops_per_call'] / 1e9:.2f} GFLOP per call (Conv, MatMul, Gemm, attention"
        f"{missing}"
        f"); p50 call {ms(roof['call_p50_s'])} ms → **{roof['achieved_gflops']:.1f} GFLOP/s**, "
        f"against a measured peak of {roof['peak_gflops']:.1f} GFLOP/s "
        f"({roof.get('peak_method', '')}): **{roof['ratio']:.1%} of peak**."
    )


def render(report: dict[str, Any]) -> str:
    s, art, m = report["settings"], report["artifact"], report["machine"]
    cold, ops = report["cold_start"], report["ops"]
    parts = [
        f"# difforge profile: {art['source']} ({art['precision']}, {art['backend']})",
        "",
        f"Artifact `{art['path']}`; {s['resolution']}px, batch {s['batch']}, {s['steps']} steps; "
        f"{s['runs']} timed runs after {s['warmup']} warm-up; threads: "
        f"{s['threads'] if s['threads'] is not None else 'as built'}.",
        f"Machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs, flags "
        f"{', '.join(m['cpu_flags'])}; load average at start "
        f"{', '.join(f'{x:.1f}' for x in m.get('load_average', []))}.",
        "",
        "## Latency",
        "",
        latency_table(report["latency"]),
        "",
        "## Cold start (fresh process)",
        "",
        table(
            [
                "interpreter",
                "imports",
                "load (hash check + sessions)",
                "first generation",
                "peak RSS",
            ],
            [
                [
                    ms(cold["interpreter_s"]),
                    ms(cold["import_s"]),
                    ms(cold["load_s"]),
                    ms(cold["first_run_s"]),
                    mib(cold["peak_rss_bytes"]),
                ]
            ],
        ),
        "",
        "Session creation (ms): "
        + ", ".join(f"{k} {ms(v)}" for k, v in cold["session_create_s"].items()),
        "",
        f"Peak resident memory: {mib(report['memory']['peak_rss_bytes'])} "
        f"({report['memory']['method']}).",
        "",
        "## Roofline (denoiser)",
        "",
        roofline_line(report["roofline"]),
        "",
        f"## Where the time goes ({PROFILERS.get(art['backend'], art['backend'])}, one generation)",
        "",
        f"Kernel time {ms(ops['kernel_s'])} ms of {ms(ops['profiled_s'])} ms in engine calls "
        f"({ops['coverage']:.0%}); {ops.get('module_coverage', 0):.0%} of kernel time mapped "
        "to a PyTorch module."
        + (
            " The per-node counters add up to more than the calls' wall time (the engine's "
            "own accounting); shares are of their sum."
            if ops["coverage"] > 1
            else ""
        ),
        *attention_lines(ops.get("attention", [])),
        "",
        "### By source module",
        "",
        ops_table(ops["by_module"]),
        "",
        *(
            ["### By kernel (what ran)", "", ops_table(ops["by_kernel"]), ""]
            if ops.get("by_kernel")
            else []
        ),
        "### By op type",
        "",
        ops_table(ops["by_op_type"]),
    ]
    sweep = report.get("sweep")
    if sweep:
        rows = []
        for p in sweep["points"]:
            lat = p["latency"]
            rows.append(
                [
                    str(p["resolution"]),
                    ms(lat["total"]["p50"]),
                    *[ms(lat["stages"][k]["p50"]) for k in lat["stages"]],
                    mib(p["peak_rss_bytes"]),
                ]
            )
        stages = list(sweep["points"][0]["latency"]["stages"])
        exps = sweep["growth_exponent"]
        rows.append(
            [
                "**k** (∝ pixels^k)",
                *[f"{exps[k]:.2f}" if exps.get(k) is not None else "–" for k in ("total", *stages)],
                "",
            ]
        )
        parts += [
            "",
            "## Against resolution",
            "",
            table(
                ["px", "total ms", *[STAGE_LABELS.get(k, k) + " ms" for k in stages], "peak RSS"],
                rows,
            ),
        ]
    return "\n".join(parts) + "\n"
