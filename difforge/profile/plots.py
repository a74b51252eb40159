"""The report's plots, as PNG bytes (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
from typing import Any

WIDTH_IN, HEIGHT_IN, DPI = 9.6, 4.0, 100
#: pixel size of every plot; the HTML gives each <img> this size so the layout never shifts
PLOT_SIZE = (int(WIDTH_IN * DPI), int(HEIGHT_IN * DPI))
STAGE_LABELS = {
    "conditioning": "text encoder",
    "denoiser": "denoiser",
    "scheduler_and_host": "scheduler + host",
    "vae_decoder": "VAE decoder",
    "other": "other",
}


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    return fig, ax


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def stage_breakdown(latency: dict[str, Any]) -> bytes:
    fig, ax = _figure()
    names = [*latency["stages"], "other"]
    p50 = [latency["stages"][n]["p50"] if n != "other" else latency["other"]["p50"] for n in names]
    p90 = [latency["stages"][n]["p90"] if n != "other" else latency["other"]["p90"] for n in names]
    ms50 = [max(v, 0.0) * 1e3 for v in p50]
    err = [max(b - a, 0.0) * 1e3 for a, b in zip(p50, p90, strict=True)]
    labels = [STAGE_LABELS.get(n, n) for n in names]
    bars = ax.barh(labels, ms50, xerr=[[0] * len(err), err], color="#3b75af", capsize=3)
    total = latency["total"]["p50"] * 1e3
    for bar, value, extra in zip(bars, ms50, err, strict=True):
        ax.text(
            bar.get_width() + extra,
            bar.get_y() + bar.get_height() / 2,
            f" {value:.1f} ms ({value / total:.0%})",
            va="center",
            fontsize=9,
        )
    ax.invert_yaxis()
    ax.set_xlabel("ms (bar: p50, whisker: p90)")
    ax.set_title(
        f"Stage breakdown at {latency['resolution']}px, {latency['steps']} steps "
        f"(total p50 {total:.0f} ms)"
    )
    ax.set_xlim(0, max(ms50) * 1.35 + 1e-9)
    return _png(fig)


def step_timeline(latency: dict[str, Any]) -> bytes:
    fig, ax = _figure()
    ms = [s * 1e3 for s in latency["step_timeline"]]
    ax.plot(range(1, len(ms) + 1), ms, marker="o", color="#c4533a")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("ms (median over runs)")
    ax.set_ylim(0, max(ms) * 1.2 + 1e-9)
    ax.set_title("Per-step denoiser time")
    ax.grid(alpha=0.3)
    return _png(fig)


def top_ops(rows: list[dict[str, Any]], title: str, top: int = 12) -> bytes:
    fig, ax = _figure()
    chosen = rows[:top]
    labels = [f"{r['component']}: {r['name']}"[:70] for r in chosen]
    shares = [r["share"] * 100 for r in chosen]
    ax.barh(labels, shares, color="#5a9e6f")
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=8)
    ax.set_xlabel("% of kernel time")
    ax.set_title(title)
    return _png(fig)


def sweep_latency(points: list[dict[str, Any]], exponents: dict[str, float | None]) -> bytes:
    fig, ax = _figure()
    res = [p["resolution"] for p in points]
    for stage in ("total", *points[0]["latency"]["stages"]):
        if stage == "total":
            values = [p["latency"]["total"]["p50"] * 1e3 for p in points]
        else:
            values = [p["latency"]["stages"][stage]["p50"] * 1e3 for p in points]
        k = exponents.get(stage)
        tag = f" (∝ pixels^{k:.2f})" if k is not None else ""
        ax.plot(res, values, marker="o", label=STAGE_LABELS.get(stage, stage) + tag)
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import NullFormatter

    ax.set_xticks(res, [str(r) for r in res])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("resolution (px, height = width)")
    ax.set_ylabel("ms (p50)")
    ax.set_title("Latency against resolution")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return _png(fig)


def sweep_memory(points: list[dict[str, Any]]) -> bytes:
    fig, ax = _figure()
    res = [p["resolution"] for p in points]
    mib = [p["peak_rss_bytes"] / 2**20 for p in points]
    ax.plot(res, mib, marker="s", color="#7b4ea3")
    ax.set_xlabel("resolution (px)")
    ax.set_ylabel("peak RSS (MiB)")
    ax.set_ylim(0, max(mib) * 1.2)
    ax.set_title("Peak resident memory of a fresh process against resolution")
    ax.grid(alpha=0.3)
    return _png(fig)
