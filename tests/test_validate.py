"""Stage 3: drift metrics and budgets."""

from __future__ import annotations

import numpy as np
import pytest

from bbruntime.metrics import drift
from exporter.budget import Budget, check_budget, load_budget
from exporter.validate import validation_inputs
from model_defs import get_spec


def test_identical_outputs_have_no_drift() -> None:
    x = np.random.default_rng(0).standard_normal((8, 1000))
    d = drift(x, x.copy())
    assert d.max_abs == 0 and d.cosine == pytest.approx(1.0) and d.kl == pytest.approx(0, abs=1e-12)
    assert d.top1_agreement == d.top5_agreement == 1.0


def test_known_drift_values() -> None:
    ref = np.array([[1.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0, 0.0, 0.0]])
    cand = np.array([[0.0, 1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0, 0.0, 0.5]])
    d = drift(ref, cand)
    assert d.max_abs == 1.0 and d.rel_max_abs == 0.5
    assert d.top1_agreement == 0.5  # first sample flips
    assert d.cosine == pytest.approx((0.0 + 4.0 / (2.0 * np.sqrt(4.25))) / 2)
    assert d.rel_l2 == pytest.approx(np.sqrt(2.25) / np.sqrt(5.0))


def test_budget_failures_name_the_numbers() -> None:
    ref = np.eye(4, 10)
    bad = ref + np.eye(4, 10, k=1) * 2
    fp32 = load_budget().budget("resnet18", "resnet", "fp32")
    failures = check_budget(fp32, {"photos": drift(ref, bad)})
    assert any("top-1 agreement 0.0% < 100%" in f for f in failures)
    assert any("of the logit scale" in f for f in failures)
    assert check_budget(Budget("loose", min_cosine=-1.0), {"photos": drift(ref, bad)}) == ()


def test_inputs_follow_the_spec() -> None:
    inputs = validation_inputs(get_spec("resnet18"))
    assert inputs["random"].shape == (4, 3, 224, 224)
    photos = inputs["photos"]
    assert photos.shape == (10, 3, 224, 224) and photos.dtype == np.float32
    # ImageNet normalisation of real photos: roughly zero-mean, unit-scale per channel.
    assert abs(float(photos.mean())) < 1.0 and 0.5 < float(photos.std()) < 2.0
