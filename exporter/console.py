"""What the CLI prints: one line per stage, and small aligned tables."""

from __future__ import annotations

from collections.abc import Sequence

import click

from .artifacts import human_size
from .subject import StageLog
from .validate import ValidationReport


def stage_line(entry: StageLog) -> str:
    """``onnx ✓ 2.1 s → artifacts/ghostnet_100/ghostnet_100.onnx (20.0 MB)``"""
    mark = "✓" if entry.ok else "✗"
    line = f"{entry.stage} {mark} {entry.seconds:.1f} s"
    if entry.path is not None:
        line += f" → {entry.path}"
        if entry.bytes is not None:
            line += f" ({human_size(entry.bytes)})"
    if entry.detail:
        line += f" ({entry.detail})" if entry.path is None else f" {entry.detail}"
    return line


def print_stage(entry: StageLog) -> None:
    click.echo(stage_line(entry))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def validation_table(report: ValidationReport) -> str:
    rows = [(name, d.samples, f"{d.max_abs:.2e}", f"{d.mean_abs:.2e}", f"{d.cosine:.6f}",
             f"{d.top1_agreement:.0%}", f"{d.top5_agreement:.0%}", f"{d.top5_containment:.0%}")
            for name, d in report.drift.items()]
    return table(("inputs", "n", "max abs", "mean abs", "cosine", "top-1", "top-5", "top-1 in top-5"), rows)
