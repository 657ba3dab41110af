"""``bbexport report``: drift and throughput per family, per precision, per backend, in one table.

- :mod:`.rows`: the report as data (typed rows, failures, family summaries);
- :mod:`.run`: making it (subjects, artifacts, timing, verdicts);
- :mod:`.machine`: the machine it ran on;
- :mod:`.markdown`, :mod:`.html`, :mod:`.write`: its views, and publishing them together;
- :mod:`.progress`: the live display.
"""

from .machine import machine_info
from .markdown import machine_lines, report_markdown
from .progress import live_progress
from .rows import ROW_FIELDS, Failure, Report, Row, console_summary, summary_line
from .run import (
    BACKENDS,
    INT8_FLAVOUR,
    MODEL_DONE,
    Artifact,
    ReportOptions,
    fp32_artifact,
    quantized_artifact,
    run_report,
)
from .write import report_csv, write_report

__all__ = ["BACKENDS", "INT8_FLAVOUR", "MODEL_DONE", "ROW_FIELDS", "Artifact", "Failure", "Report", "ReportOptions",
           "Row", "console_summary", "fp32_artifact", "live_progress", "machine_info", "machine_lines",
           "quantized_artifact", "report_csv", "report_markdown", "run_report", "summary_line", "write_report"]
