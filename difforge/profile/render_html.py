"""report.json -> a self-contained report.html: inline CSS, plots as base64 PNG, no scripts.

Nothing is fetched when the file is viewed. Every plot is an ``<img class="plot">`` with a
fixed pixel size (:data:`difforge.profile.plots.PLOT_SIZE`), so the layout does not depend on
whether the images decode (the browser test relies on that).
"""

from __future__ import annotations

import base64
import html
from typing import Any

from difforge.profile import plots
from difforge.profile.render_md import render as render_md

_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1100px; }
.plot { display: block; box-sizing: content-box; margin: 12px 0 24px; border: 1px solid #ddd; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 14px; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; }
"""


def figures(report: dict[str, Any]) -> list[tuple[str, str, bytes]]:
    """(id, caption, png) for every plot the report has data for."""
    out = [
        ("plot-stages", "Stage breakdown", plots.stage_breakdown(report["latency"])),
        ("plot-steps", "Per-step timeline", plots.step_timeline(report["latency"])),
        (
            "plot-modules",
            "Top source modules",
            plots.top_ops(report["ops"]["by_module"], "Top source modules (kernel time)"),
        ),
        (
            "plot-optypes",
            "Top op types",
            plots.top_ops(report["ops"]["by_op_type"], "Top op types (kernel time)"),
        ),
    ]
    sweep = report.get("sweep")
    if sweep and len(sweep["points"]) >= 2:
        out.append(
            (
                "plot-sweep-latency",
                "Latency against resolution",
                plots.sweep_latency(sweep["points"], sweep["growth_exponent"]),
            )
        )
        out.append(
            ("plot-sweep-memory", "Memory against resolution", plots.sweep_memory(sweep["points"]))
        )
    return out


def _markdown_tables(md: str) -> str:
    """A minimal Markdown -> HTML for what render_md writes: headings, tables, paragraphs."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            cells = [
                [html.escape(c.strip().strip("*")) for c in r.strip("|").split("|")]
                for r in block
                if not set(r) <= set("|-")
            ]
            out.append("<table>")
            out.append("<tr>" + "".join(f"<th>{c}</th>" for c in cells[0]) + "</tr>")
            for row in cells[1:]:
                out.append("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
            out.append("</table>")
            continue
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            text = html.escape(line).replace("**", "")
            out.append(f"<p>{text.replace('`', '')}</p>")
        i += 1
    return "\n".join(out)


def render(report: dict[str, Any]) -> str:
    width, height = plots.PLOT_SIZE
    imgs = []
    for ident, caption, png in figures(report):
        data = base64.b64encode(png).decode("ascii")
        imgs.append(
            f'<h3>{html.escape(caption)}</h3>\n<img class="plot" id="{ident}" width="{width}" '
            f'height="{height}" alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        )
    title = f"difforge profile: {report['artifact']['source']}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n<h2>Plots</h2>\n"
        + "\n".join(imgs)
        + "\n<h2>Tables</h2>\n"
        + _markdown_tables(render_md(report).split("\n", 1)[1])
        + "\n</body></html>\n"
    )
