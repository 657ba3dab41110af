"""One drift budget: the flat table (``drift_budget.csv``) that every command holds its artifacts to.

A row names a variant, a family or ``*``, a precision and its limits; the most specific row wins,
per precision. What a precision's limits are checked on is a rule of this module, not of the
table: FP32 and FP16 on every validation input set (seeded noise and held-out photos), INT8 on the
held-out photos only (it is calibrated on photos; noise is outside its ranges), with its top-1
held only where the FP32 model's top-1s mean something (:func:`top1_meaningful`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from bbruntime.errors import BBExportError
from bbruntime.metrics import Drift

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_BUDGET_FILE = Path(__file__).with_name("drift_budget.csv")
COLUMNS = ["match", "precision", "max_rel_abs", "min_cosine", "min_top1", "min_top5"]
# Tables written before the min_top5 column (top-5 containment) still load; the column is then empty.
LEGACY_COLUMNS = COLUMNS[:-1]
INT8_INPUT_SETS = ("photos",)

# When do the reference's top-1 predictions mean something? Random weights, even BN-recalibrated,
# either predict one class for every photo (MobileNetV2, GhostNet) or spread them with softmax gaps
# of a few thousandths (ResNet-18), where any rounding flips a top-1. Trained weights on real
# photos give many classes with clear winners. So INT8's top-1 agreement is held only where
#   - the reference's top-1s cover at least half as many distinct classes as there are samples (or as
#     there are classes, where fewer: LeNet-5's 10 over 400 held-out digits), or TOP1_MIN_CLASSES
#     where that is fewer (110 crops of 10 photos: real Lite1 names 19 classes), and
#   - the median gap between its first and second softmax probability is at least 0.05;
# and then over the confident samples alone (gap >= metrics.CONFIDENT_MARGIN): a photo whose two
# best classes are a near-tie (real EfficientNet-Lite1 on held-out photos: gaps 0.004, 0.053) flips
# under small rounding and says nothing about the precision. Agreement over all samples is still reported.
TOP1_MIN_CLASS_SHARE = 0.5
TOP1_MIN_MARGIN = 0.05
TOP1_MIN_CLASSES = 10


def top1_meaningful(d: Drift) -> bool:
    """Whether the reference's top-1s over a set are diverse and confident enough to compare."""
    share = TOP1_MIN_CLASS_SHARE * min(d.samples, d.classes or d.samples)
    diverse = d.reference_classes >= max(2, min(share, TOP1_MIN_CLASSES))
    return diverse and d.reference_margin >= TOP1_MIN_MARGIN


@dataclass(frozen=True)
class Budget:
    """The limits one artifact must meet. ``None`` switches a check off."""

    name: str
    max_rel_abs: float | None = None  # max abs error / max |reference logit|
    min_cosine: float | None = None
    min_top1: float | None = None
    min_top5: float | None = None  # top-5 containment: the reference's top-1 within the candidate's top 5
    # Hold ``min_top1`` and ``min_top5`` only on input sets where the reference's top-1s mean something; elsewhere
    # top-1 agreement is reported as "not meaningful".
    top1_if_meaningful: bool = False
    input_sets: tuple[str, ...] | None = None  # the input sets checked; None = all of them
    source: str = ""  # the table row it came from, for manifests and messages


@dataclass(frozen=True)
class BudgetRow:
    match: str  # variant, family or "*"
    precision: str
    max_rel_abs: float | None
    min_cosine: float | None
    min_top1: float | None
    min_top5: float | None = None

    def specificity(self, name: str, family: str) -> int:
        return 2 if self.match == name else 1 if self.match == family else 0


@dataclass(frozen=True)
class BudgetTable:
    path: Path
    rows: tuple[BudgetRow, ...]

    def budget(self, name: str, family: str, precision: str) -> Budget:
        """The limits of ``precision`` for variant ``name`` of ``family``: the most specific row's."""
        if precision not in PRECISIONS:
            raise BBExportError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
        rows = [r for r in self.rows if r.precision == precision and r.match in (name, family, "*")]
        row = max(rows, key=lambda r: r.specificity(name, family), default=None)
        if row is None:
            return Budget(precision, source=f"{self.path.name}: no row")
        int8 = precision == "int8"
        return Budget(precision, row.max_rel_abs, row.min_cosine, row.min_top1, row.min_top5, top1_if_meaningful=int8,
                      input_sets=INT8_INPUT_SETS if int8 else None,
                      source=f"{self.path.name}: {row.match},{row.precision}")


def load_budget(path: Path | None = None) -> BudgetTable:
    """The budget table at ``path`` (default: the shipped one); a malformed row is an error naming its line."""
    path = Path(path) if path is not None else DEFAULT_BUDGET_FILE
    try:
        text = path.read_text()
    except OSError as e:
        raise BBExportError(f"cannot read drift budget {path}: {e.strerror or e}") from e
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.DictReader(lines)
    if reader.fieldnames not in (COLUMNS, LEGACY_COLUMNS):
        raise BBExportError(f"{path}: header must be {','.join(COLUMNS)} (or without min_top5); "
                            f"got {reader.fieldnames}")
    rows, seen = [], set()
    for number, cells in enumerate(reader, start=1):
        try:
            row = BudgetRow(cells["match"].strip(), cells["precision"].strip(),
                            *(_optional_float(cells.get(c)) for c in COLUMNS[2:]))
        except (ValueError, AttributeError) as e:
            raise BBExportError(f"{path}, data row {number}: {e}") from e
        if row.precision not in PRECISIONS:
            raise BBExportError(f"{path}, data row {number}: precision must be one of {', '.join(PRECISIONS)}; "
                                f"got {row.precision!r}")
        if (row.match, row.precision) in seen:
            raise BBExportError(f"{path}: the row {row.match},{row.precision} appears twice")
        seen.add((row.match, row.precision))
        rows.append(row)
    return BudgetTable(path, tuple(rows))


def _optional_float(cell: str | None) -> float | None:
    cell = (cell or "").strip()
    return float(cell) if cell else None


def check_budget(budget: Budget, results: dict[str, Drift]) -> tuple[str, ...]:
    """How the drift on each input set misses ``budget``: one phrase per miss, none when within it."""
    failures = []
    for set_name, d in results.items():
        if budget.input_sets is not None and set_name not in budget.input_sets:
            continue
        if budget.max_rel_abs is not None and d.rel_max_abs > budget.max_rel_abs:
            failures.append(f"{set_name}: max abs error {d.max_abs:.3g} is {d.rel_max_abs:.2e} of the logit "
                            f"scale (budget {budget.max_rel_abs:g})")
        if budget.min_cosine is not None and d.cosine < budget.min_cosine:
            failures.append(f"{set_name}: cosine {d.cosine:.6f} < {budget.min_cosine}")
        failures += _prediction_misses(budget, set_name, d)
    return tuple(failures)


def _prediction_misses(budget: Budget, set_name: str, d: Drift) -> list[str]:
    """Top-1 agreement and top-5 containment below the budget; with ``top1_if_meaningful``, held only
    where the reference's top-1s mean something, top-1 then over the confident samples."""
    held = not budget.top1_if_meaningful or top1_meaningful(d)
    misses = []
    if budget.min_top1 is not None and held:
        top1, where = ((d.confident_top1_agreement, f" on the {d.confident_samples} confident samples")
                       if budget.top1_if_meaningful else (d.top1_agreement, ""))
        if top1 < budget.min_top1:
            misses.append(f"{set_name}: top-1 agreement {top1:.1%}{where} < {budget.min_top1:.0%}")
    if budget.min_top5 is not None and held and d.top5_containment < budget.min_top5:
        misses.append(f"{set_name}: top-5 containment {d.top5_containment:.1%} < {budget.min_top5:.0%}")
    return misses
