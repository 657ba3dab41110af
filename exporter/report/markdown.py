"""report.md, and the columns the HTML tables share with it."""

from __future__ import annotations

from collections.abc import Callable

from ..artifacts import human_size
from ..validate import format_top1
from .rows import RANDOM_WEIGHTS_NOTE, Report, Row, grouped_rows, label, summary_line


# Columns of the human-readable tables (Markdown and HTML): header -> cell formatter.
def display_columns() -> list[tuple[str, Callable[[Row], str]]]:
    def num(key, fmt):
        return lambda r: "—" if getattr(r, key) is None else format(getattr(r, key), fmt)

    return [
        ("Model", lambda r: r.model),
        ("Weights", lambda r: r.weights),
        ("Precision", lambda r: label(r.precision, r.flavour)),
        ("Backend", lambda r: r.backend),
        ("Batch", lambda r: str(r.batch)),
        ("Median ms", num("median_ms", ".2f")),
        ("p90 ms", num("p90_ms", ".2f")),
        ("p99 ms", num("p99_ms", ".2f")),
        ("img/s", num("images_per_s", ".1f")),
        ("× FP32", lambda r: "—" if r.speedup_vs_fp32 is None else f"{r.speedup_vs_fp32:.2f}×"),
        ("× eager", lambda r: "—" if r.speedup_vs_eager is None else f"{r.speedup_vs_eager:.2f}×"),
        ("Max abs", num("max_abs", ".2e")),
        ("Cosine", lambda r: "reference" if r.cosine is None else f"{r.cosine:.6f}"),
        ("Top-1", _top1_cell),
        ("Top-5", num("top5", ".0%")),
        ("Top-1 in top-5", _top5_containment_cell),
        ("Budget", _budget_cell),
        ("Size", lambda r: "—" if r.artifact_bytes is None else human_size(r.artifact_bytes)),
        ("Params", lambda r: f"{r.params / 1e6:.2f}M"),
        ("GMACs", num("gmacs", ".3f")),
    ]


def _top1_cell(row: Row) -> str:
    if row.top1 is None:
        return "—"
    return format_top1(row.top1, row.top1_meaningful, row.top1_confident, row.confident_samples,
                       row.drift_samples, not_meaningful=" (n/m)")


def _top5_containment_cell(row: Row) -> str:
    """Held and shown like top-1: "(n/m)" where the FP32 top-1s mean nothing (random weights)."""
    if row.top5_containment is None:
        return "—"
    return f"{row.top5_containment:.0%}" + ("" if row.top1_meaningful else " (n/m)")


def _budget_cell(row: Row) -> str:
    if row.budget_pass is None:
        return "—"
    return "pass" if row.budget_pass else f"MISS: {row.budget_misses}"


def machine_lines(report: Report) -> list[str]:
    m, s = report.machine, report.settings
    timing = s["timing"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return [
        f"Machine: {m['cpu']}, {m['usable_cores']} usable of {m['cores']} cores, GPU: {m['gpu'] or 'none'}; "
        f"{m['os']}, Python {m['python']}; load average {m['load_average_1min']} when the report was written",
        f"Libraries: {versions}",
        f"Timing: warm-up ≥ {timing['warmup_iters']} iterations and ≥ {timing['warmup_seconds']} s, then "
        f"≥ {timing['min_iters']} iterations and ≥ {timing['min_seconds']} s per row; "
        f"{timing['threads']} intra-op threads (torch and ONNX Runtime)",
        f"Drift: against FP32 PyTorch on {len(s['evaluation_photos'])} held-out images "
        f"({_listed(s['evaluation_photos'])}); INT8 calibrated on the disjoint set "
        f"({_listed(s['calibration_photos'])}, {s['int8_method']} calibration); budget {s['budget_file']}",
    ] + (["INT8 flavours: int8-cpu runs through ONNX Runtime's integer kernels; int8-trt on ort runs its Q/DQ "
          "as written — TensorRT's arithmetic, at float speed: its latency is not TensorRT's"]
         if any(r.flavour == "trt" and r.backend == "ort" for r in report.rows) else [])


def _listed(names: list[str], shown: int = 12) -> str:
    """``a, b, c``; past ``shown`` names (LeNet-5's 400 digits), the first ones and how many more."""
    return ", ".join(names[:shown]) + (f", … and {len(names) - shown} more" if len(names) > shown else "")


def report_markdown(report: Report) -> str:
    columns = display_columns()
    lines = [f"# bbexport report ({report.created})", "", f"> **Note.** {RANDOM_WEIGHTS_NOTE}", ""]
    lines += [f"- {line}" for line in machine_lines(report)]
    lines += [f"- Not measured: {note}" for note in report.skipped]
    for summary, rows, failures in grouped_rows(report):
        lines += ["", f"## {summary['family']}", "", f"**Summary:** {summary_line(summary)}", ""]
        if rows:
            lines.append("| " + " | ".join(h for h, _ in columns) + " |")
            lines.append("|" + "|".join("---" for _ in columns) + "|")
            lines += ["| " + " | ".join(cell(r).replace("|", "\\|") for _, cell in columns) + " |" for r in rows]
        lines += [f"- **FAILED** {f.model} at {f.stage}: {f.error}" for f in failures]
    return "\n".join(lines) + "\n"
