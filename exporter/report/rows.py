"""The report as data: one typed row per model x precision x backend x batch, failures, summaries.

Markdown, CSV, JSON and HTML are views of these (:mod:`.markdown`, :mod:`.write`, :mod:`.html`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime

RANDOM_WEIGHTS_NOTE = ("Drift measured on random (BN-recalibrated) weights is a smoke test of the export "
                       "and quantization path, not an accuracy claim: only rows whose weights are a "
                       "trained checkpoint say what a precision costs in accuracy.")
PRECISION_ORDER = ("fp32", "fp16", "int8")
BACKEND_ORDER = ("torch", "ort", "trt")


@dataclass
class Row:
    """One measured combination. Its fields, in this order, are report.csv's columns."""

    family: str
    model: str
    weights: str  # "random (seed 0, BN-recalibrated)" or "checkpoint NAME (sha256 …)"
    weights_kind: str
    params: int
    gmacs: float
    img_size: int
    precision: str
    flavour: str  # INT8: "cpu" | "trt"; "" otherwise
    backend: str
    batch: int
    threads: int
    iterations: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    device_median_ms: float | None
    images_per_s: float
    speedup_vs_fp32: float | None = None
    speedup_vs_eager: float | None = None
    # drift against FP32 PyTorch on the held-out photos; None on the PyTorch baseline row
    max_abs: float | None = None
    mean_abs: float | None = None
    cosine: float | None = None
    top1: float | None = None
    top1_meaningful: bool | None = None
    top1_confident: float | None = None
    confident_samples: int | None = None
    top5: float | None = None  # the five best classes equal as a set
    top5_containment: float | None = None  # the FP32 top-1 among the five best
    drift_samples: int | None = None
    budget_min_cosine: float | None = None
    budget_min_top1: float | None = None
    budget_min_top5: float | None = None
    budget_pass: bool | None = None
    budget_misses: str = ""
    artifact: str = ""
    artifact_bytes: int | None = None
    reused: bool | None = None

    @property
    def label(self) -> str:
        return label(self.precision, self.flavour)

    def to_dict(self) -> dict:
        return asdict(self)


ROW_FIELDS = tuple(f.name for f in fields(Row))


def label(precision: str, flavour: str) -> str:
    return f"{precision}-{flavour}" if flavour else precision


@dataclass(frozen=True)
class Failure:
    model: str
    family: str
    stage: str
    error: str  # one line
    traceback: str = ""


@dataclass
class Report:
    rows: list[Row]
    failures: list[Failure]
    machine: dict
    settings: dict
    skipped: list[str]  # combinations not measured, and why
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    interrupted: int | None = None  # the exit code of the signal that stopped the run early (130, 143)

    @property
    def budget_misses(self) -> list[Row]:
        return [r for r in self.rows if r.budget_pass is False]

    def families(self) -> list[str]:
        return sorted({r.family for r in self.rows} | {f.family for f in self.failures})

    def summaries(self) -> list[dict]:
        return [family_summary(family, self.rows, self.failures) for family in self.families()]

    def to_dict(self) -> dict:
        return {"schema": "bbexport.report/1", "created": self.created, "note": RANDOM_WEIGHTS_NOTE,
                "machine": self.machine, "settings": self.settings, "rows": [r.to_dict() for r in self.rows],
                "summaries": self.summaries(), "failures": [asdict(f) for f in self.failures],
                "skipped": self.skipped, "interrupted": self.interrupted}


def family_summary(family: str, rows: Sequence[Row], failures: Sequence[Failure]) -> dict:
    """Worst drift and best speedup of one family, with the rows they come from."""
    mine = [r for r in rows if r.family == family]
    drifted = [r for r in mine if r.cosine is not None and r.precision != "fp32"]
    fast = [r for r in mine if r.speedup_vs_eager is not None and r.backend != "torch"]
    worst = min(drifted or [r for r in mine if r.cosine is not None], key=lambda r: r.cosine, default=None)
    best = max(fast, key=lambda r: r.speedup_vs_eager, default=None)
    return {
        "family": family,
        "models": len({r.model for r in mine} | {f.model for f in failures if f.family == family}),
        "rows": len(mine),
        "worst_drift": worst and {"model": worst.model, "precision": label(worst.precision, worst.flavour),
                                  "backend": worst.backend, "cosine": worst.cosine, "top1": worst.top1},
        "best_speedup": best and {"model": best.model, "precision": label(best.precision, best.flavour),
                                  "backend": best.backend, "batch": best.batch,
                                  "speedup_vs_eager": best.speedup_vs_eager},
        "budget_misses": sum(r.budget_pass is False for r in mine),
        "failures": sum(f.family == family for f in failures),
    }


def summary_line(summary: dict) -> str:
    parts = [f"{summary['family']}: {summary['models']} model(s)"]
    if summary["worst_drift"]:
        w = summary["worst_drift"]
        parts.append(f"worst drift cosine {w['cosine']:.6f} ({w['model']} {w['precision']} on {w['backend']})")
    if summary["best_speedup"]:
        b = summary["best_speedup"]
        parts.append(f"best speedup {b['speedup_vs_eager']:.2f}× vs eager ({b['model']} {b['precision']} on "
                     f"{b['backend']}, batch {b['batch']})")
    parts.append(f"{summary['budget_misses']} budget miss(es), {summary['failures']} failure(s)")
    return "; ".join(parts)


def console_summary(report: Report) -> list[str]:
    """What the CLI prints after a run: a line per family, per failure and per budget miss."""
    lines = [summary_line(s) for s in report.summaries()]
    lines += [f"FAILED {f.model} at {f.stage}: {f.error}" for f in report.failures]
    lines += [f"budget miss: {r.model} {label(r.precision, r.flavour)} on {r.backend}, batch "
              f"{r.batch}: {r.budget_misses}" for r in report.budget_misses]
    return lines


def grouped_rows(report: Report) -> Iterator[tuple[dict, list[Row], list[Failure]]]:
    """(summary, rows, failures) per family, rows ordered by model, precision, backend, batch."""
    order = {p: i for i, p in enumerate(PRECISION_ORDER)}
    backend_order = {b: i for i, b in enumerate(BACKEND_ORDER)}
    for summary in report.summaries():
        family = summary["family"]
        rows = sorted((r for r in report.rows if r.family == family),
                      key=lambda r: (r.model, order[r.precision], backend_order[r.backend], r.batch))
        yield summary, rows, [f for f in report.failures if f.family == family]
