"""The drift budget: one table, read by every command, the most specific row winning."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bbruntime import metrics
from bbruntime.errors import BBExportError
from bbruntime.metrics import Drift
from exporter.budget import Budget, check_budget, load_budget, top1_meaningful
from exporter.cli import cli

HEADER = "match,precision,max_rel_abs,min_cosine,min_top1\n"


def test_budget_lookup_prefers_the_most_specific_row(tmp_path: Path) -> None:
    table = tmp_path / "budget.csv"
    table.write_text(f"# comment\n{HEADER}*,int8,,0.98,\nresnet,int8,,0.97,\nresnet18,int8,,0.99,0.95\n")
    budgets = load_budget(table)
    assert budgets.budget("resnet18", "resnet", "int8").min_cosine == 0.99
    assert budgets.budget("resnet50", "resnet", "int8").min_cosine == 0.97
    assert budgets.budget("ghostnet_050", "ghostnet", "int8").min_cosine == 0.98
    unchecked = budgets.budget("resnet18", "resnet", "fp16")
    assert (unchecked.max_rel_abs, unchecked.min_cosine, unchecked.min_top1) == (None, None, None)


def drift(cosine: float, top1: float, classes: int, margin: float) -> Drift:
    return Drift(samples=10, max_abs=0.1, mean_abs=0.01, rel_max_abs=0.01, rel_l2=0.01, cosine=cosine, kl=0.0,
                 top1_agreement=top1, top5_agreement=top1, reference_classes=classes,
                 reference_margin=margin, confident_samples=10, confident_top1_agreement=top1)


def test_top1_is_held_only_where_it_means_something(tmp_path: Path) -> None:
    table = tmp_path / "budget.csv"
    table.write_text(f"{HEADER}*,int8,,0.99,0.95\n")
    budget = load_budget(table).budget("resnet18", "resnet", "int8")
    confident = drift(0.985, 0.90, classes=8, margin=0.3)
    assert check_budget(budget, {"photos": confident}) == (
        "photos: cosine 0.985000 < 0.99", "photos: top-1 agreement 90.0% on the 10 confident samples < 95%")
    one_class = drift(0.995, 0.50, classes=1, margin=0.3)  # random weights: one class for every photo
    assert check_budget(budget, {"photos": one_class}) == ()
    assert check_budget(Budget("unchecked"), {"photos": confident}) == ()
    assert check_budget(budget, {"random": confident}) == ()  # INT8 answers on the photos only


def test_default_budget_matches_the_precision_issue() -> None:
    budgets = load_budget()
    assert budgets.budget("resnet18", "resnet", "fp32").max_rel_abs == 1e-3
    assert budgets.budget("resnet18", "resnet", "fp32").min_top1 == 1.0
    assert budgets.budget("resnet18", "resnet", "fp16").min_cosine == 0.999
    int8 = budgets.budget("resnet18", "resnet", "int8")
    assert (int8.min_cosine, int8.min_top1, int8.min_top5, int8.input_sets) == (0.98, 0.95, 0.99, ("photos",))


@pytest.mark.parametrize("text, fragment", [
    ("model,precision\n*,fp32\n", "header must be"),
    (HEADER + "*,fp64,,0.9,\n", "precision must be"),
    (HEADER + "*,fp32,,high,\n", "data row 1"),
    (HEADER + "*,fp32,,0.9,\n*,fp32,,0.8,\n", "appears twice"),
])
def test_malformed_budget_is_a_user_error(tmp_path: Path, text: str, fragment: str) -> None:
    table = tmp_path / "budget.csv"
    table.write_text(text)
    with pytest.raises(BBExportError, match=fragment):
        load_budget(table)


def test_a_family_row_changes_the_quantize_verdict(tmp_path: Path) -> None:
    """The table decides ``bbexport quantize``'s exit code as it decides the report's verdict: a
    resnet row asking for an FP16 cosine no float16 graph reaches fails the same command that passed."""
    command = ["quantize", "resnet18", "--precision", "fp16", "--img-size", "64", "--out", str(tmp_path / "a")]
    assert CliRunner().invoke(cli, command).exit_code == 0
    strict = tmp_path / "budget.csv"
    strict.write_text(f"{HEADER}*,fp32,0.001,,1.0\nresnet,fp16,,0.99999999,\n")
    result = CliRunner().invoke(cli, [*command, "--budget", str(strict)])
    assert result.exit_code == 1, result.output
    assert "budget.csv: resnet,fp16" in result.stderr and "cosine" in result.stderr
    other = tmp_path / "other.csv"
    other.write_text(f"{HEADER}*,fp32,0.001,,1.0\nghostnet,fp16,,0.99999999,\n")  # another family's row
    assert CliRunner().invoke(cli, [*command, "--budget", str(other)]).exit_code == 0


def test_top5_containment_is_held_where_top1_is() -> None:
    """The int8 row's min_top5 (0.99): the FP32 top-1 among the INT8 five best, held only where top-1
    means something, like top-1 itself; a table without the column still loads, the check off."""
    reference = np.zeros((20, 10))
    reference[np.arange(20), np.arange(20) % 10] = 5.0  # 10 classes, confident
    demoted = reference.copy()
    demoted[:2] = -demoted[:2]  # two samples: the reference's top-1 becomes the candidate's last
    measured = metrics.drift(reference, demoted)
    assert measured.top5_containment == 0.9 and metrics.drift(reference, reference).top5_containment == 1.0
    int8 = load_budget().budget("resnet18", "resnet", "int8")
    assert int8.min_top5 == 0.99
    assert "photos: top-5 containment 90.0% < 99%" in check_budget(int8, {"photos": measured})
    one_class = metrics.drift(np.tile(reference[:1], (20, 1)), np.tile(demoted[:1], (20, 1)))
    assert one_class.top5_containment == 0.0
    assert not any("top-5" in miss for miss in check_budget(int8, {"photos": one_class}))  # not meaningful


def test_a_crop_set_of_few_photos_can_make_top1_meaningful() -> None:
    """110 crops of 10 photos cannot name 55 classes; 10 distinct confident classes are enough."""
    few = drift(0.999, 1.0, classes=12, margin=0.3)
    assert top1_meaningful(replace(few, samples=110, classes=1000))
    assert not top1_meaningful(replace(few, samples=110, classes=1000, reference_classes=9))
    assert not top1_meaningful(replace(few, samples=10, classes=1000, reference_classes=4))  # 10 photos: 5 needed
