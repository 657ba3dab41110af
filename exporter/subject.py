"""One model as every stage of one command sees it, built once and handed down.

A :class:`Subject` holds the spec at the size asked for, the network with its weights (a checkpoint,
or seeded random weights with BatchNorm statistics re-estimated once), the validation inputs (seeded
noise and the held-out photos, preprocessed by the spec), the FP32 PyTorch outputs on them
(computed on first use, once), and the drift budget table in force. ``bbexport onnx``, ``quantize``,
``trt`` and ``report`` each build one per model and pass it to every stage they run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from bbruntime.errors import ValidationFailed
from bbruntime.runners import Runner
from calibration import sample_set
from model_defs import ModelSpec, spec_with_size

from .budget import Budget, BudgetTable, load_budget
from .runners import TorchRunner
from .validate import ValidationReport, validate_against, validation_inputs
from .weights import LIVE_BRANCHES, ModelSource, WeightsSource, build_model, model_source


@dataclass(frozen=True)
class StageLog:
    stage: str
    ok: bool
    seconds: float
    detail: str = ""
    path: Path | None = None
    bytes: int | None = None


Logger = Callable[[StageLog], None]


@dataclass
class Subject:
    source: ModelSource
    spec: ModelSpec  # at the input size asked for
    model: nn.Module
    weights: WeightsSource
    weights_path: Path | None
    seed: int
    inputs: dict[str, np.ndarray]  # validation input sets: "random" (seeded noise) and "photos" (held out)
    budgets: BudgetTable
    _reference: dict[str, np.ndarray] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def reference(self) -> dict[str, np.ndarray]:
        """FP32 PyTorch outputs on every validation input set: the ground truth of every drift figure."""
        if self._reference is None:
            runner = TorchRunner(self.model)
            self._reference = {set_name: runner.infer(batch) for set_name, batch in self.inputs.items()}
        return self._reference

    def budget(self, precision: str) -> Budget:
        return self.budgets.budget(self.spec.name, self.spec.family, precision)

    def identity(self) -> dict:
        """What decides the network and its weights, as artifact manifests record it for reuse."""
        weights = ({"kind": "checkpoint", "sha256": self.weights.sha256} if self.weights.kind == "checkpoint"
                   else {"kind": "random", "seed": self.seed, "live_branches": self.weights.live_branches,
                         "revived_norm_weight": self.weights.revived_norm_weight})
        return {"model": self.spec.to_dict(), "definition": self.source.definition, "weights": weights}

    def matches(self, img_size, weights: Path | None, seed: int, live_branches: bool = LIVE_BRANCHES) -> bool:
        """Whether export options ask for this subject: same size, same checkpoint file (or none), same seed
        and branch initialisation."""
        wanted = spec_with_size(self.source.spec, img_size).input_size
        same_weights = (None if weights is None else Path(weights).resolve()) == (
            None if self.weights_path is None else self.weights_path.resolve())
        same_random = seed == self.seed and live_branches == self.weights.live_branches
        return wanted == self.spec.input_size and same_weights and (weights is not None or same_random)


def subject_for(name: str, img_size: int | tuple[int, int] | None = None, weights: Path | None = None, seed: int = 0,
                budget_file: Path | None = None, live_branches: bool = LIVE_BRANCHES) -> Subject:
    """The subject of ``name`` (a registered variant, ``timm:NAME`` or ``torchvision:NAME``).

    Every input is checked before the network is built: the budget table, the size, the weights file.
    """
    budgets = load_budget(budget_file)
    source = model_source(name)
    spec = spec_with_size(source.spec, img_size)
    model, loaded = build_model(source, weights, seed, spec=spec, live_branches=live_branches)
    return Subject(source, spec, model, loaded, Path(weights) if weights is not None else None, seed,
                   validation_inputs(spec, seed=seed), budgets)


def validated(subject: Subject, candidate: Runner, precision: str, label: str, log: Logger,
              keep_misses: bool = False) -> ValidationReport:
    """``candidate`` against the subject's FP32 PyTorch outputs under its budget for ``precision``;
    logs the stage line and raises :class:`ValidationFailed` on a miss unless ``keep_misses``."""
    started = time.perf_counter()
    report = validate_against(subject.reference, candidate, subject.inputs, subject.budget(precision),
                              sample_set(subject.spec, "held_out").names)
    photos = report.drift["photos"]
    log(StageLog("validate", report.passed, time.perf_counter() - started,
                 f"photos: max abs {photos.max_abs:.2e}, cosine {photos.cosine:.6f}, top-1 {photos.top1_agreement:.0%}"))
    if not keep_misses:
        raise_on_miss(report, label)
    return report


def raise_on_miss(report: ValidationReport, label: str) -> None:
    """:class:`ValidationFailed` with the numbers where ``report`` misses its budget (fresh or reused artifacts)."""
    if not report.passed:
        raise ValidationFailed(f"{label} does not match PyTorch within its budget ({report.budget.source}): "
                               + "; ".join(report.failures))
