"""The ONNX pipeline: build -> export -> simplify -> validate -> publish, as one function.

Stages write into a staging folder; only a fully validated result is renamed into
``<out>/<model>/`` together with its manifest, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

from bbruntime.errors import ExportError, ValidationFailed
from bbruntime.metrics import Drift
from bbruntime.runners import OrtRunner
from model_defs import ModelSpec, definition_sha256, get_spec, spec_with_size

from .artifacts import artifact_bytes, ensure_writable_dir, publish, sha256_file, staging_dir, write_json
from .onnx_export import ExportResult, onnx_from_model
from .runners import TorchRunner
from .simplify import SimplifyResult, simplified_from_onnx
from .validate import Budget, ValidationReport, validate, validation_inputs
from .weights import WeightsSource, build_model


@dataclass(frozen=True)
class StageLog:
    stage: str
    ok: bool
    seconds: float
    detail: str = ""
    path: Path | None = None
    bytes: int | None = None


Logger = Callable[[StageLog], None]


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


@dataclass(frozen=True)
class ExportOutcome:
    onnx_path: Path
    manifest_path: Path
    manifest: dict
    validation: ValidationReport
    simplify: SimplifyResult | None
    log: list[StageLog] = field(default_factory=list)


def library_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import onnxsim

    from . import __version__

    return {"bbexport": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "onnxsim": onnxsim.__version__}


def export_onnx(name: str, options: ExportOptions = ExportOptions(), log: Logger | None = None) -> ExportOutcome:
    """Export, simplify and validate ``name``; publish ``<out>/<name>/<name>.onnx`` and ``.json``."""
    spec = spec_with_size(get_spec(name), options.img_size)
    name = spec.name
    if options.dynamic_batch and not spec.dynamic_batch:
        raise ExportError(f"{name} cannot take a dynamic batch: {spec.dynamic_batch_note}")
    out = ensure_writable_dir(Path(options.out))
    final_dir = out / name
    model, weights = build_model(name, options.weights, options.seed, spec=spec)
    stages: list[StageLog] = []

    def record(entry: StageLog) -> None:
        stages.append(entry)
        if log:
            log(entry)

    started = time.perf_counter()
    with staging_dir(out) as tmp:
        t = time.perf_counter()
        exported = onnx_from_model(model, tmp / f"{name}.raw.onnx", spec.input_size, opset=options.opset,
                                   batch=options.batch, dynamic_batch=options.dynamic_batch,
                                   exporter=options.exporter)
        record(StageLog("export", True, time.perf_counter() - t, f"{options.exporter}, opset {options.opset}, "
                                                                  f"{exported.nodes} nodes"))
        inputs = validation_inputs(spec, seed=options.seed)
        staged = tmp / f"{name}.onnx"
        simplify = None
        if options.simplify:
            t = time.perf_counter()
            simplify = simplified_from_onnx(exported.path, staged, inputs["random"][: options.batch])
            detail = (f"{simplify.nodes_before} → {simplify.nodes_after} nodes" if simplify.simplified
                      else f"kept the unsimplified graph: {simplify.reason}")
            record(StageLog("simplify", simplify.simplified, time.perf_counter() - t, detail))
        else:
            publish(exported.path, staged)
        t = time.perf_counter()
        report = validate(TorchRunner(model), OrtRunner(staged), inputs)
        photos = report.drift["photos"]
        record(StageLog("validate", report.passed, time.perf_counter() - t,
                        f"photos: max abs {photos.max_abs:.2e}, cosine {photos.cosine:.6f}, "
                        f"top-1 {photos.top1_agreement:.0%}"))
        if not report.passed:
            raise ValidationFailed(f"{name} ONNX does not match PyTorch: " + "; ".join(report.failures))
        manifest = _manifest(spec, options, weights, exported, simplify, report, staged)
        onnx_path = publish(staged, final_dir / f"{name}.onnx")  # creates final_dir
        manifest_path = write_json(final_dir / f"{name}.json", manifest)
    record(StageLog("onnx", True, time.perf_counter() - started, path=onnx_path, bytes=artifact_bytes(onnx_path)))
    return ExportOutcome(onnx_path, manifest_path, manifest, report, simplify, stages)


def reusable_export(name: str, options: ExportOptions = ExportOptions(), log: Logger | None = None
                    ) -> ExportOutcome | None:
    """The published FP32 export of ``name`` if its manifest records exactly these options (model
    spec and size, weights, opset, exporter, batch, simplify, library versions), it passed validation
    and the file still has its recorded sha256; else None: call :func:`export_onnx`."""
    spec = spec_with_size(get_spec(name), options.img_size)
    onnx_path = Path(options.out) / spec.name / f"{spec.name}.onnx"
    manifest_path = onnx_path.with_suffix(".json")
    try:
        manifest = json.loads(manifest_path.read_text())
        recorded = (manifest["model"], manifest["weights"], manifest["onnx"]["opset"], manifest["onnx"]["exporter"],
                    manifest["onnx"]["batch"], manifest["simplify"].get("reason") == "--no-simplify",
                    manifest["versions"], manifest["validation"]["passed"], manifest["definition_sha256"])
    except (OSError, ValueError, KeyError):
        return None
    if options.weights is not None:
        weights_match = recorded[1].get("sha256") == sha256_file(Path(options.weights))
    else:
        weights_match = recorded[1].get("kind") == "random" and recorded[1].get("seed") == options.seed
    wanted = (json.loads(json.dumps(spec.to_dict(), default=str)), options.opset, options.exporter,
              "dynamic" if options.dynamic_batch else options.batch, not options.simplify, library_versions(), True,
              definition_sha256(spec.name))
    if not weights_match or (recorded[0], *recorded[2:]) != wanted:
        return None
    if not onnx_path.is_file() or sha256_file(onnx_path) != manifest["onnx"]["sha256"]:
        return None
    validation = manifest["validation"]
    report = ValidationReport(
        budget=Budget(**{k: tuple(v) if isinstance(v, list) else v for k, v in validation["budget"].items()}),
        drift={k: Drift(**v) for k, v in validation["drift"].items()}, photos=tuple(validation["photos"]))
    entry = StageLog("onnx", True, 0.0, "re-used: its manifest records the same inputs", onnx_path,
                     artifact_bytes(onnx_path))
    if log:
        log(entry)
    return ExportOutcome(onnx_path, manifest_path, manifest, report, None, [entry])


def _manifest(spec: ModelSpec, options: ExportOptions, weights: WeightsSource, exported: ExportResult,
              simplify: SimplifyResult | None, report: ValidationReport, onnx_file: Path) -> dict:
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": spec.to_dict(),
        "definition_sha256": definition_sha256(spec.name),
        "weights": asdict(weights),
        "onnx": {
            "file": f"{spec.name}.onnx",
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
