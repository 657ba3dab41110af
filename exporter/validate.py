"""Stage 3: an artifact's outputs against PyTorch's, on seeded random inputs and on real photos."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bbruntime.errors import BBExportError
from bbruntime.metrics import Drift, drift
from bbruntime.runners import OrtRunner, Runner
from calibration import EVALUATION_PHOTOS, preprocess_batch, sample_set
from model_defs import ModelSpec, get_spec, spec_with_size

from .budget import Budget, check_budget, load_budget, top1_meaningful
from .runners import TorchRunner
from .weights import build_model

RANDOM_SAMPLES = 4


def top1_text(d: Drift) -> str:
    """Top-1 agreement as the console prints it."""
    return format_top1(d.top1_agreement, top1_meaningful(d), d.confident_top1_agreement, d.confident_samples,
                       d.samples)


def format_top1(agreement: float, meaningful: bool, confident_agreement: float, confident: int, samples: int,
                not_meaningful: str = " (not meaningful)") -> str:
    """``90%``, ``90% (100% of 5 confident)`` or ``60%`` + ``not_meaningful``."""
    text = f"{agreement:.0%}"
    if not meaningful:
        return text + not_meaningful
    if confident < samples:
        text += f" ({confident_agreement:.0%} of {confident} confident)"
    return text


@dataclass(frozen=True)
class ValidationReport:
    budget: Budget
    drift: dict[str, Drift]  # input set name ("random", "photos") -> drift on it
    photos: tuple[str, ...]
    failures: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {"budget": asdict(self.budget), "passed": self.passed, "failures": list(self.failures),
                "photos": list(self.photos), "drift": {k: v.to_dict() for k, v in self.drift.items()},
                "top1_meaningful": {k: top1_meaningful(v) for k, v in self.drift.items()}}


def validation_inputs(spec: ModelSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded standard-normal inputs and the spec's held-out photos (or digits), preprocessed by the spec.
    Whatever the kind of image, the held-out set is called "photos" (LeNet-5's are digits)."""
    rng = np.random.default_rng(seed)
    return {
        "random": rng.standard_normal((RANDOM_SAMPLES, *spec.input_size), dtype=np.float32),
        "photos": preprocess_batch(sample_set(spec, "held_out").images(), spec),
    }


def validate(reference: Runner, candidate: Runner, inputs: dict[str, np.ndarray], budget: Budget,
             photos: tuple[str, ...] = EVALUATION_PHOTOS) -> ValidationReport:
    """Run both runners on every input set and hold the drift to ``budget``."""
    outputs = {name: reference.infer(batch) for name, batch in inputs.items()}
    return validate_against(outputs, candidate, inputs, budget, photos)


def validate_against(reference_outputs: dict[str, np.ndarray], candidate: Runner, inputs: dict[str, np.ndarray],
                     budget: Budget, photos: tuple[str, ...] = EVALUATION_PHOTOS) -> ValidationReport:
    """:func:`validate` against reference outputs computed once (re-used across many candidates)."""
    results = {name: drift(reference_outputs[name], candidate.infer(batch)) for name, batch in inputs.items()}
    return ValidationReport(budget=budget, drift=results, photos=photos, failures=check_budget(budget, results))


def validate_onnx_file(onnx_file: Path, model_name: str, weights: Path | None = None, seed: int = 0,
                       budget_file: Path | None = None) -> ValidationReport:
    """Validate an existing FP32 ONNX file against the PyTorch variant it came from."""
    import onnx

    if not Path(onnx_file).is_file():
        raise BBExportError(f"ONNX file not found: {onnx_file}")
    try:
        graph_input = onnx.load(str(onnx_file), load_external_data=False).graph.input[0]
    except Exception as e:  # protobuf raises DecodeError and friends for non-ONNX files
        raise BBExportError(f"{onnx_file} is not an ONNX model: {type(e).__name__}") from e
    dims = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    spec = get_spec(model_name)
    if len(dims) != 4 or dims[1] != spec.input_size[0]:
        raise BBExportError(f"{onnx_file} takes input {dims}, not an image batch for {spec.name} "
                            f"({spec.input_size[0]} channels)")
    spec = spec_with_size(spec, (dims[2], dims[3]))
    model, _ = build_model(spec.name, weights, seed, spec=spec)
    budget = load_budget(budget_file).budget(spec.name, spec.family, "fp32")
    return validate(TorchRunner(model), OrtRunner(Path(onnx_file)), validation_inputs(spec, seed), budget,
                    photos=sample_set(spec, "held_out").names)
