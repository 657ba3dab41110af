"""Publishing a report: report.json, .csv, .md and .html, together, each by an atomic rename."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..artifacts import publish, staging_dir
from .html import report_html
from .markdown import report_markdown
from .rows import ROW_FIELDS, Report


def write_report(report: Report, out: Path) -> dict[str, Path]:
    """Publish report.json, .csv, .md and .html into ``out`` together (each by an atomic rename)."""
    out = Path(out)
    texts = {"report.json": json.dumps(report.to_dict(), indent=2, default=str) + "\n",
             "report.csv": report_csv(report), "report.md": report_markdown(report),
             "report.html": report_html(report)}
    paths = {}
    with staging_dir(out) as tmp:
        for filename, text in texts.items():
            (tmp / filename).write_text(text, encoding="utf-8")
            paths[filename.split(".")[1]] = publish(tmp / filename, out / filename)
    return paths


def report_csv(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ROW_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(r.to_dict() for r in report.rows)
    return buffer.getvalue()
