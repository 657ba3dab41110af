"""The ONNX stage: export -> simplify -> validate -> publish, for one :class:`Subject`.

Stages write into a staging folder; only a fully validated result is renamed into
``<out>/<model>/`` together with its manifest, so a failed run leaves nothing behind. A published
export whose manifest records the same inputs (:mod:`exporter.reuse`) is reused instead.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

from bbruntime.errors import ExportError
from bbruntime.metrics import Drift
from bbruntime.runners import OrtRunner

from .artifacts import (
    artifact_bytes,
    check_writable,
    ensure_writable_dir,
    publish,
    sha256_file,
    staging_dir,
    write_json,
)
from .budget import check_budget
from .onnx_export import ExportResult, onnx_from_model
from .reuse import reusable
from .simplify import SimplifyResult, simplified_from_onnx
from .subject import Logger, StageLog, Subject, raise_on_miss, subject_for, validated
from .validate import ValidationReport
from .weights import LIVE_BRANCHES


@dataclass(frozen=True)
class ExportOptions:
    opset: int = 17
    img_size: int | tuple[int, int] | None = None
    batch: int = 1
    dynamic_batch: bool = False
    weights: Path | None = None
    out: Path = Path("artifacts")
    simplify: bool = True
    exporter: str = "torchscript"
    seed: int = 0
    budget: Path | None = None  # drift budget table; None: exporter/drift_budget.csv
    live_branches: bool = LIVE_BRANCHES  # random weights: residual branches' zero-initialised norms revived


@dataclass(frozen=True)
class ExportOutcome:
    onnx_path: Path
    manifest_path: Path
    manifest: dict
    validation: ValidationReport
    simplify: SimplifyResult | None
    reused: bool = False
    log: list[StageLog] = field(default_factory=list)


def library_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import onnxsim

    from . import __version__

    return {"bbexport": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "onnxsim": onnxsim.__version__}


def subject_of(model: str | Subject, options: ExportOptions) -> Subject:
    """``model`` as a subject built from ``options`` (a subject made elsewhere must match them)."""
    if isinstance(model, str):
        return subject_for(model, options.img_size, options.weights, options.seed, options.budget,
                           options.live_branches)
    if not model.matches(options.img_size, options.weights, options.seed, options.live_branches):
        raise ValueError(f"subject {model.name} was built for other size, weights or seed than these export options")
    return model


def export_inputs(subject: Subject, options: ExportOptions) -> dict:
    """What decides an FP32 export (:mod:`exporter.reuse`)."""
    return {"stage": "onnx", **subject.identity(), "opset": options.opset, "exporter": options.exporter,
            "batch": "dynamic" if options.dynamic_batch else options.batch, "simplify": options.simplify,
            "versions": library_versions()}


def export_onnx(model: str | Subject, options: ExportOptions = ExportOptions(), log: Logger | None = None,
                reuse: bool = True, keep_misses: bool = False) -> ExportOutcome:
    """Export, simplify and validate ``model``; publish ``<out>/<name>/<name>.onnx`` and ``.json``.
    With ``reuse``, a published export made from the same inputs is returned instead. ``keep_misses``
    publishes an export that misses its budget with the verdict recorded (the report), instead of raising."""
    stages: list[StageLog] = []

    def record(entry: StageLog) -> None:
        stages.append(entry)
        if log:
            log(entry)

    check_writable(Path(options.out))  # before the network is built: a bad folder fails first
    subject = subject_of(model, options)
    if options.dynamic_batch and not subject.spec.dynamic_batch:
        raise ExportError(f"{subject.name} cannot take a dynamic batch: {subject.spec.dynamic_batch_note}")
    out = ensure_writable_dir(Path(options.out))
    onnx_path = out / subject.name / f"{subject.name}.onnx"
    inputs = export_inputs(subject, options)
    if reuse and (manifest := reusable(onnx_path.with_suffix(".json"), inputs)) is not None:
        return _reused(subject, onnx_path, manifest, record, stages, keep_misses)
    started = time.perf_counter()
    with staging_dir(out) as tmp:
        staged, exported, simplify = _export_and_simplify(subject, options, tmp, record)
        report = validated(subject, OrtRunner(staged), "fp32", f"{subject.name} ONNX", record, keep_misses)
        manifest = _manifest(subject, options, inputs, exported, simplify, report, staged)
        staged_manifest = write_json(tmp / f"{subject.name}.json", manifest)  # every write before any publish
        onnx_path = publish(staged, onnx_path)  # creates the model's folder
        manifest_path = publish(staged_manifest, onnx_path.with_suffix(".json"))
    record(StageLog("onnx", True, time.perf_counter() - started, path=onnx_path, bytes=artifact_bytes(onnx_path)))
    return ExportOutcome(onnx_path, manifest_path, manifest, report, simplify, False, stages)


def _export_and_simplify(subject: Subject, options: ExportOptions, tmp: Path, record: Logger
                         ) -> tuple[Path, ExportResult, SimplifyResult | None]:
    t = time.perf_counter()
    exported = onnx_from_model(subject.model, tmp / f"{subject.name}.raw.onnx", subject.spec.input_size,
                               opset=options.opset, batch=options.batch, dynamic_batch=options.dynamic_batch,
                               exporter=options.exporter)
    record(StageLog("export", True, time.perf_counter() - t, f"{options.exporter}, opset {options.opset}, "
                                                              f"{exported.nodes} nodes"))
    staged = tmp / f"{subject.name}.onnx"
    if not options.simplify:
        publish(exported.path, staged)
        return staged, exported, None
    t = time.perf_counter()
    simplify = simplified_from_onnx(exported.path, staged, subject.inputs["random"][: options.batch])
    detail = (f"{simplify.nodes_before} → {simplify.nodes_after} nodes" if simplify.simplified
              else f"kept the unsimplified graph: {simplify.reason}")
    record(StageLog("simplify", simplify.simplified, time.perf_counter() - t, detail))
    return staged, exported, simplify


def recorded_validation(manifest: dict, subject: Subject, precision: str) -> ValidationReport:
    """A published artifact's recorded drift, judged under the budget in force now."""
    validation = manifest["validation"]
    drift = {k: Drift(**v) for k, v in validation["drift"].items()}
    budget = subject.budget(precision)
    return ValidationReport(budget=budget, drift=drift, photos=tuple(validation["photos"]),
                            failures=check_budget(budget, drift))


def _reused(subject: Subject, onnx_path: Path, manifest: dict, record: Logger, stages: list,
            keep_misses: bool = False) -> ExportOutcome:
    report = recorded_validation(manifest, subject, "fp32")
    if not keep_misses:
        raise_on_miss(report, str(onnx_path))
    record(StageLog("onnx", True, 0.0, "re-used: its manifest records the same inputs", onnx_path,
                    artifact_bytes(onnx_path)))
    return ExportOutcome(onnx_path, onnx_path.with_suffix(".json"), manifest, report, None, True, stages)


def _manifest(subject: Subject, options: ExportOptions, inputs: dict, exported: ExportResult,
              simplify: SimplifyResult | None, report: ValidationReport, onnx_file: Path) -> dict:
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "inputs": inputs,
        "model": subject.spec.to_dict(),
        "definition_sha256": subject.source.definition,
        "weights": asdict(subject.weights),
        "onnx": {
            "file": f"{subject.name}.onnx",
            "sha256": sha256_file(onnx_file),
            "bytes": artifact_bytes(onnx_file),
            "external_data": exported.external_data,
            "opset": exported.opset,
            "exporter": exported.exporter,
            "batch": "dynamic" if options.dynamic_batch else options.batch,
            "input": {"name": exported.input_name, "shape": exported.input_shape},
            "output": {"name": exported.output_name, "shape": exported.output_shape},
        },
        "simplify": asdict(simplify) if simplify else {"simplified": False, "reason": "--no-simplify"},
        "validation": report.to_dict(),
        "versions": library_versions(),
    }
