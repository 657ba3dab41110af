"""report.html: one self-contained file (inline CSS, plots as inline SVG, no network).

Plots are drawn with matplotlib's object API (``Figure``, no pyplot), so making a report changes
no process-wide state.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from .markdown import display_columns, machine_lines
from .rows import PRECISION_ORDER, RANDOM_WEIGHTS_NOTE, Report, Row, grouped_rows, summary_line

COLOURS = {"fp32": "#1f77b4", "fp16": "#ff7f0e", "int8-cpu": "#2ca02c", "int8-trt": "#d62728",
           "fp32 torch": "#7f7f7f"}
MARKERS = {"ort": "o", "trt": "s", "torch": "D"}
DRIFT_FLOOR = 1e-9  # 1 - cosine is drawn on a log axis; identical outputs sit on this floor

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px 32px;
       color: #1b1f24; background: #fff; }
h1 { font-size: 22px; margin: 0 0 8px; } h2 { font-size: 18px; margin: 28px 0 6px; }
.note { background: #fff8db; border: 1px solid #e8cf6a; padding: 8px 12px; border-radius: 4px; }
.machine { color: #444; margin: 10px 0; padding-left: 18px; }
.summary { margin: 4px 0 8px; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; }
.plots figure { margin: 0; border: 1px solid #ddd; border-radius: 4px; padding: 6px; }
.plots figcaption { font-size: 12px; color: #555; max-width: 640px; }
.plots svg { max-width: 100%; height: auto; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 12.5px; margin: 6px 0 4px; }
th, td { border: 1px solid #d8dde3; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f0f3f6; position: sticky; top: 0; }
td.text { text-align: left; }
tr.precision-fp32 td:first-child { border-left: 4px solid #1f77b4; }
tr.precision-fp16 td:first-child { border-left: 4px solid #ff7f0e; }
tr.precision-int8 td:first-child { border-left: 4px solid #2ca02c; }
td.miss { background: #fde2e1; color: #8a1c16; font-weight: 600; }
td.pass { color: #1a7f37; }
.failure { color: #8a1c16; }
"""

TEXT_COLUMNS = {"Model", "Precision", "Backend", "Budget", "Weights", "Cosine"}
MISSED_BY_COLUMN = {"Cosine": "cosine", "Top-1": "top-1"}  # column -> how report.budget_misses names it


def report_html(report: Report) -> str:
    esc = html.escape
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>bbexport report {esc(report.created)}</title><style>{CSS}</style></head><body>",
             f"<h1>bbexport report <small>{esc(report.created)}</small></h1>",
             f'<p class="note"><strong>Note.</strong> {esc(RANDOM_WEIGHTS_NOTE)}</p>',
             '<ul class="machine">', *(f"<li>{esc(line)}</li>" for line in machine_lines(report)),
             *(f"<li>Not measured: {esc(note)}</li>" for note in report.skipped), "</ul>",
             "<h2>Plots</h2>", '<div class="plots">', *_figures(report.rows), "</div>"]
    columns = display_columns()
    for summary, rows, failures in grouped_rows(report):
        parts += [f'<h2 id="family-{esc(summary["family"])}">{esc(summary["family"])}</h2>',
                  f'<p class="summary"><strong>Summary:</strong> {esc(summary_line(summary))}</p>']
        if rows:
            parts.append('<div class="scroll"><table><thead><tr>' + "".join(f"<th>{esc(h)}</th>" for h, _ in columns)
                         + "</tr></thead><tbody>")
            for row in rows:
                cells = []
                for header, cell in columns:
                    classes = ["text"] if header in TEXT_COLUMNS else []
                    if header == "Budget" and row.budget_pass is not None:
                        classes.append("pass" if row.budget_pass else "miss")
                    if MISSED_BY_COLUMN.get(header, "\0") in row.budget_misses:
                        classes.append("miss")
                    cells.append(f'<td class="{" ".join(classes)}">{esc(cell(row))}</td>')
                parts.append(f'<tr class="precision-{esc(row.precision)}">' + "".join(cells) + "</tr>")
            parts.append("</tbody></table></div>")
        parts += [f'<p class="failure"><strong>FAILED</strong> {esc(f.model)} at {esc(f.stage)}: {esc(f.error)}</p>'
                  for f in failures]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- plots


def _figures(rows: Sequence[Row]) -> list[str]:
    plots = [
        (_drift_vs_speedup(rows), "Drift against speedup, per family: one point per variant × precision × "
                                  "backend at the smallest batch. Dashed lines: the cosine budgets."),
        (_throughput_bars(rows), "Throughput (images/s) at the largest batch, per precision and backend."),
        (_size_vs_latency(rows), "Artifact size against median latency at the smallest batch."),
    ]
    return [f"<figure>{_svg(fig)}<figcaption>{html.escape(caption)}</figcaption></figure>"
            for fig, caption in plots]


def _svg(fig: Figure) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE: the SVG sits inside HTML


def _colour(row: Row) -> str:
    return COLOURS["fp32 torch"] if row.backend == "torch" else COLOURS.get(row.label, "#9467bd")


def _at_batch(rows: Sequence[Row], largest: bool) -> list[Row]:
    if not rows:
        return []
    batch = (max if largest else min)(r.batch for r in rows)
    return [r for r in rows if r.batch == batch]


def _no_data(ax) -> None:
    ax.text(0.5, 0.5, "no measured rows", ha="center", va="center", transform=ax.transAxes, color="#888")
    ax.set_xticks([])
    ax.set_yticks([])


def _drift_vs_speedup(rows: Sequence[Row]) -> Figure:
    points = [r for r in _at_batch(rows, largest=False) if r.cosine is not None]
    families = sorted({r.family for r in points}) or ["(none)"]
    columns = min(3, len(families))
    lines = -(-len(families) // columns)
    fig = Figure(figsize=(4.6 * columns, 3.6 * lines), layout="constrained")
    axes = fig.subplots(lines, columns, squeeze=False).ravel()
    for ax, family in zip(axes, families, strict=False):
        mine = [r for r in points if r.family == family]
        if not mine:
            _no_data(ax)
            continue
        for r in mine:
            x, y = r.speedup_vs_eager or 0.0, max(1.0 - r.cosine, DRIFT_FLOOR)
            ax.scatter(x, y, color=_colour(r), marker=MARKERS.get(r.backend, "o"), s=42,
                       edgecolors="black" if r.budget_pass is False else "none", linewidths=1.5, zorder=3)
            ax.annotate(r.model, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7, color="#333")
        for limit in sorted({r.budget_min_cosine for r in mine if r.budget_min_cosine is not None}):
            ax.axhline(1.0 - limit, color="#999", linestyle="--", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_title(family, fontsize=10)
        ax.set_xlabel("speedup vs PyTorch eager (×)", fontsize=8)
        ax.set_ylabel("1 − cosine to FP32 PyTorch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(families):]:
        ax.set_visible(False)
    _legend(fig, points)
    return fig


def _legend(fig: Figure, rows: Sequence[Row]) -> None:
    from matplotlib.lines import Line2D

    labels = sorted({(r.label, r.backend) for r in rows},
                    key=lambda lb: (PRECISION_ORDER.index(lb[0].split("-")[0]), lb[1]))
    handles = [Line2D([], [], linestyle="", marker=MARKERS.get(backend, "o"),
                      color=COLOURS["fp32 torch"] if backend == "torch" else COLOURS.get(label, "#9467bd"),
                      label=f"{label} {backend}") for label, backend in labels]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(6, len(handles)), fontsize=8,
                   frameon=False)


def _throughput_bars(rows: Sequence[Row]) -> Figure:
    points = _at_batch(rows, largest=True)
    models = sorted({r.model for r in points}, key=lambda m: (next(r.family for r in points
                                                                      if r.model == m), m))
    series = sorted({(r.label, r.backend) for r in points},
                    key=lambda s: (s[1] != "torch", PRECISION_ORDER.index(s[0].split("-")[0]), s[1]))
    fig = Figure(figsize=(max(6.0, 1.1 * len(models) + 2), 3.8), layout="constrained")
    ax = fig.subplots()
    if not points:
        _no_data(ax)
        return fig
    width = 0.8 / len(series)
    for i, (label, backend) in enumerate(series):
        values = [next((r.images_per_s for r in points if r.model == m and r.label == label
                        and r.backend == backend), 0.0) for m in models]
        colour = COLOURS["fp32 torch"] if backend == "torch" else COLOURS.get(label, "#9467bd")
        ax.bar([j + (i - (len(series) - 1) / 2) * width for j in range(len(models))], values, width,
               label=f"{label} {backend}", color=colour, hatch="//" if backend == "trt" else None)
    ax.set_xticks(range(len(models)), models, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"images/s (batch {points[0].batch})", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncols=min(4, len(series)), frameon=False)
    return fig


def _size_vs_latency(rows: Sequence[Row]) -> Figure:
    points = [r for r in _at_batch(rows, largest=False) if r.artifact_bytes]
    fig = Figure(figsize=(6.0, 3.8), layout="constrained")
    ax = fig.subplots()
    if not points:
        _no_data(ax)
        return fig
    for r in points:
        x, y = r.artifact_bytes / 1e6, r.median_ms
        ax.scatter(x, y, color=_colour(r), marker=MARKERS.get(r.backend, "o"), s=36, zorder=3)
        ax.annotate(r.model, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7, color="#333")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("artifact size (MB)", fontsize=8)
    ax.set_ylabel(f"median latency (ms, batch {points[0].batch})", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, which="both", alpha=0.3)
    _legend(fig, points)
    return fig

