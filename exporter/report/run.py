"""The run: for each model, its subject built once, every precision made (or reused) and timed on every
backend against the PyTorch eager baseline measured in the same run, each row's drift judged by the
budget table (:mod:`exporter.budget`). A model or stage that fails is recorded with its one-line error
and the run goes on.
"""

from __future__ import annotations

import signal
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bbruntime.errors import EXIT_INTERRUPTED, BBExportError, Interrupted, first_line
from bbruntime.runners import OrtRunner, int8_runner
from bbruntime.timing import Timing, TimingOptions, time_runner
from calibration import sample_set
from model_defs import count_macs, spec_with_size

from ..artifacts import artifact_bytes, publish, staging_dir
from ..budget import PRECISIONS, load_budget, top1_meaningful
from ..pipeline import ExportOptions, export_onnx
from ..runners import TorchRunner, set_torch_threads
from ..subject import Subject, subject_for
from ..validate import ValidationReport, validate_against
from ..weights import LIVE_BRANCHES, model_source
from .machine import machine_info
from .rows import BACKEND_ORDER, Failure, Report, Row, label

BACKENDS = BACKEND_ORDER
# Each backend gets the INT8 flavour built for it: uint8/int8 Q/DQ for ONNX Runtime's CPU
# provider, symmetric int8 Q/DQ where TensorRT fuses them. ``--int8-flavours cpu,trt`` also runs
# the TensorRT flavour on ONNX Runtime, its Q/DQ as written: TensorRT's arithmetic at float speed,
# the drift of the engine-to-be on a machine without a GPU.
INT8_FLAVOUR = {"ort": "cpu", "trt": "trt"}


@dataclass(frozen=True)
class Artifact:
    """One ONNX file (or engine) with the manifest that says how it was made, and its verdict."""

    path: Path
    manifest: dict
    reused: bool
    validation: ValidationReport


def fp32_artifact(subject: Subject, export: ExportOptions, log=None) -> Artifact:
    """The validated FP32 ONNX of ``subject``: reused while its manifest records the same inputs."""
    outcome = export_onnx(subject, export, log=log, keep_misses=True)
    return Artifact(outcome.onnx_path, outcome.manifest, outcome.reused, outcome.validation)


def quantized_artifact(subject: Subject, precision: str, flavour: str, export: ExportOptions,
                       method: str | None = None, log=None) -> Artifact:
    """The FP16 or INT8 ONNX of ``subject`` from the precision stage (reused while its inputs hold),
    published with its verdict even when it misses the budget: the report shows the miss."""
    from ..quantize import QuantizeOptions, quantize_model

    options = (QuantizeOptions(precision) if precision == "fp16"
               else QuantizeOptions(precision, flavour=flavour, method=method))
    outcome = quantize_model(subject, options, export=export, log=log, keep_misses=True)
    return Artifact(outcome.onnx_path, outcome.manifest, outcome.reused, outcome.validation)


@dataclass(frozen=True)
class ReportOptions:
    precisions: tuple[str, ...] = ("fp32",)
    backends: tuple[str, ...] = ("torch", "ort")
    batches: tuple[int, ...] = (1,)
    img_size: int | None = None
    timing: TimingOptions = TimingOptions()
    artifacts: Path = Path("artifacts")
    weights: Mapping[str, Path] = field(default_factory=dict)  # model -> checkpoint
    seed: int = 0
    live_branches: bool = LIVE_BRANCHES  # random weights: residual branches' zero-initialised norms revived
    budget_file: Path | None = None  # None: exporter/drift_budget.csv
    cuda_graph: bool = False  # TensorRT rows replay a captured CUDA graph
    # calibration method of the precision stage (exporter.calib_cache.METHODS); None: default_method for the weights
    int8_method: str | None = None
    int8_flavours: tuple[str, ...] | None = None  # INT8 flavours ONNX Runtime runs; None: its own ("cpu")

    def __post_init__(self) -> None:
        for kind, values, allowed in (("precision", self.precisions, PRECISIONS),
                                      ("backend", self.backends, BACKENDS)):
            unknown = [v for v in values if v not in allowed]
            if unknown or not values:
                raise BBExportError(f"unknown {kind} {', '.join(unknown) or '(none)'}; choose from "
                                    f"{', '.join(allowed)}")
        unknown = [f for f in self.int8_flavours or () if f not in INT8_FLAVOUR.values()]
        if unknown or self.int8_flavours == ():
            raise BBExportError(f"unknown INT8 flavour {', '.join(unknown) or '(none)'}; choose from "
                                f"{', '.join(sorted(set(INT8_FLAVOUR.values())))}")
        if not self.batches or min(self.batches) < 1:
            raise BBExportError(f"batch sizes must be >= 1; got {self.batches}")


ProgressCallback = Callable[[str, str], None]  # (model, stage); stage MODEL_DONE closes a model
MODEL_DONE = "done"


def run_report(models: Sequence[str], options: ReportOptions = ReportOptions(),
               progress: ProgressCallback | None = None) -> Report:
    """Export, convert, validate and time each model; failures are recorded, never raised."""
    progress = progress or (lambda model, stage: None)
    threads = set_torch_threads(options.timing.threads)
    load_budget(options.budget_file)  # a bad table fails the run before any model is built
    backends, skipped = _available_backends(options)
    rows: list[Row] = []
    failures: list[Failure] = []
    interrupted = None
    try:
        for name in models:
            rows.extend(_measured_model(name, options, backends, progress, failures))
    except (KeyboardInterrupt, Interrupted) as stop:  # keep what is finished; the CLI says where it is
        interrupted = getattr(stop, "exit_code", EXIT_INTERRUPTED[signal.SIGINT])
    settings = {
        "models": list(models), "precisions": list(options.precisions), "backends": list(options.backends),
        "batches": list(options.batches), "img_size": options.img_size,
        "timing": {**asdict(options.timing), "threads": threads}, "artifacts": str(options.artifacts),
        "budget_file": str(load_budget(options.budget_file).path),
        "evaluation_photos": _sample_names(models, options, "held_out"),
        "calibration_photos": _sample_names(models, options, "calibration"),
        "int8_flavours": {backend: list(_flavours("int8", backend, options)) for backend in BACKENDS[1:]},
        "int8_method": options.int8_method,
    }
    return Report(rows, failures, machine_info(), settings, skipped, interrupted=interrupted)


def _sample_names(models: Sequence[str], options: ReportOptions, split: str) -> list[str]:
    """The models' held-out or calibration images (photos, digits), each named once."""
    specs = (spec_with_size(model_source(m).spec, options.img_size) for m in models)
    return list(dict.fromkeys(n for spec in specs for n in sample_set(spec, split).names))


def _measured_model(name: str, options: ReportOptions, backends: tuple[str, ...], progress: ProgressCallback,
                    failures: list[Failure]) -> list[Row]:
    """The rows of one model; its failures are appended to ``failures``."""
    spec = spec_with_size(model_source(name).spec, options.img_size)

    def fail(stage: str, error: Exception) -> None:
        kind = "" if isinstance(error, BBExportError) else f"{type(error).__name__}: "
        failures.append(Failure(spec.name, spec.family, stage, kind + first_line(error),
                                "".join(traceback.format_exception(error))))

    rows = _model_rows(name, options, backends, lambda stage: progress(spec.name, stage), fail)
    progress(spec.name, MODEL_DONE)
    return rows


def _available_backends(options: ReportOptions) -> tuple[tuple[str, ...], list[str]]:
    skipped = []
    if any(p != "fp32" for p in options.precisions) and "torch" in options.backends:
        skipped.append("torch: PyTorch eager is timed in FP32 only, as the baseline of every speedup")
    backends = tuple(options.backends)
    if "torch" not in backends:
        backends = ("torch", *backends)  # the eager baseline is always measured in the same run
    if "trt" in backends:
        reason = _trt_missing()
        if reason:
            skipped.append(f"trt: {reason}")
            backends = tuple(b for b in backends if b != "trt")
    return backends, skipped


def _trt_missing() -> str | None:
    from ..trt import trt_available

    return trt_available()


def _model_rows(name: str, options: ReportOptions, backends: tuple[str, ...], stage: Callable[[str], None],
                fail: Callable[[str, Exception], None]) -> list[Row]:
    """Every row of one model: its subject is built once, every precision and backend measured from it."""
    try:
        stage("build PyTorch model")
        subject = subject_for(name, options.img_size, options.weights.get(name), options.seed, options.budget_file,
                              options.live_branches)
        export = ExportOptions(img_size=options.img_size, dynamic_batch=subject.spec.dynamic_batch
                               and max(options.batches) > 1, weights=options.weights.get(name),
                               out=Path(options.artifacts), seed=options.seed, budget=options.budget_file,
                               live_branches=options.live_branches)
        stage("export fp32")
        fp32 = fp32_artifact(subject, export, log=lambda entry: stage(f"{entry.stage} {'✓' if entry.ok else '✗'}"))
    except Exception as e:  # noqa: BLE001 - one model's failure is recorded; the run goes on
        fail("export fp32", e)
        return []
    rows: list[Row] = []
    base = _row_base(subject)
    photos = subject.inputs["photos"]

    def measure(precision: str, flavour: str, backend: str, runner, artifact: Artifact | None) -> None:
        for batch in options.batches:
            stage(f"time {label(precision, flavour)} on {backend}, batch {batch}")
            try:
                timing = time_runner(runner, _batch_of(photos, batch), options.timing)
            except Exception as e:  # noqa: BLE001 - recorded; the other rows still get measured
                fail(f"time {label(precision, flavour)} {backend} b{batch}", e)
                continue
            rows.append(_row(base, precision, flavour, backend, timing, artifact))

    measure("fp32", "", "torch", TorchRunner(subject.model), None)
    for precision, flavour, backend, artifact, runner in _artifacts_and_runners(subject, fp32, export, options,
                                                                                backends, stage, fail):
        measure(precision, flavour, backend, runner, artifact)
    _add_speedups(rows)
    return rows


def _artifacts_and_runners(subject: Subject, fp32: Artifact, export: ExportOptions, options: ReportOptions,
                           backends: tuple[str, ...], stage, fail):
    """(precision, flavour, backend, artifact, runner) for every combination asked for; each artifact
    is made once (FP16 serves ONNX Runtime and TensorRT alike), a failure recorded and skipped."""
    log = lambda entry: stage(f"{entry.stage} {'✓' if entry.ok else '✗'}")  # noqa: E731
    converted = {("fp32", ""): fp32}
    for precision in options.precisions:
        for backend in (b for b in backends if b != "torch"):
            for flavour in _flavours(precision, backend, options):
                name = label(precision, flavour)
                try:
                    if (precision, flavour) not in converted:
                        stage(f"convert to {name}")
                        converted[precision, flavour] = quantized_artifact(subject, precision, flavour, export,
                                                                            options.int8_method, log=log)
                    artifact = converted[precision, flavour]
                    if backend == "ort":
                        runner = (int8_runner(artifact.path, flavour, options.timing.threads) if precision == "int8"
                                  else OrtRunner(artifact.path, threads=options.timing.threads))
                    else:
                        stage(f"build TensorRT {name} engine")
                        artifact, runner = trt_engine(subject, artifact, precision, options)
                except Exception as e:  # noqa: BLE001 - recorded; other precisions still get measured
                    fail(f"{name} {backend}", e)
                    continue
                yield precision, flavour, backend, artifact, runner


def _row_base(subject: Subject) -> dict:
    spec = subject.spec  # counted on the subject's own network: registered and foreign alike
    params = sum(p.numel() for p in subject.model.parameters())
    gmacs = count_macs(subject.model, spec.input_size) / 1e9
    return {"family": spec.family, "model": spec.name, "weights": subject.weights.describe(),
            "weights_kind": subject.weights.kind, "params": params, "gmacs": round(gmacs, 4),
            "img_size": spec.input_size[1]}


def _flavours(precision: str, backend: str, options: ReportOptions) -> tuple[str, ...]:
    """The INT8 flavours ``backend`` runs (TensorRT: its own only); "" for FP32 and FP16."""
    if precision != "int8":
        return ("",)
    if backend == "trt" or options.int8_flavours is None:
        return (INT8_FLAVOUR[backend],)
    return options.int8_flavours


def trt_engine(subject: Subject, source: Artifact, precision: str, options: ReportOptions) -> tuple[Artifact, object]:
    """A TensorRT engine built from ``source`` for the report's batch sizes, its runner, and its drift
    on the photos against FP32 PyTorch under the subject's budget. Engines are rebuilt every run: a
    plan belongs to one TensorRT version and GPU model, which no ONNX manifest records."""
    from ..trt import TrtRunner, engine_from_onnx

    batch = _static_batch(source.path)
    top = max(options.batches)
    bounds = (None, None, None) if batch is not None else (1, top, top)
    final = source.path.with_name(f"{source.path.stem}.report-{precision}.engine")
    with staging_dir(final.parent) as tmp:
        built = engine_from_onnx(source.path, tmp / final.name, precision=precision, min_batch=bounds[0],
                                 opt_batch=bounds[1], max_batch=bounds[2])
        engine_path = publish(built.engine_path, final)
        publish(built.sidecar_path, final.with_name(final.name + ".json"))
    runner = TrtRunner(engine_path, cuda_graph=options.cuda_graph)
    photos = {"photos": subject.inputs["photos"]}
    report = validate_against({"photos": subject.reference["photos"]}, runner, photos, subject.budget(precision),
                              sample_set(subject.spec, "held_out").names)
    return Artifact(engine_path, built.sidecar, False, report), runner


def _static_batch(onnx_path: Path) -> int | None:
    import onnx

    dim = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") else None


def _batch_of(photos: np.ndarray, batch: int) -> np.ndarray:
    """``batch`` real preprocessed photos (repeated as needed): timing data with real statistics."""
    return np.ascontiguousarray(np.resize(photos, (batch, *photos.shape[1:])))


def _row(base: dict, precision: str, flavour: str, backend: str, timing: Timing, artifact: Artifact | None) -> Row:
    validation = artifact.validation if artifact else None
    drift = validation.drift["photos"] if validation else None
    budget = validation.budget if validation else None
    measured = {} if drift is None else {
        "max_abs": drift.max_abs, "mean_abs": drift.mean_abs, "cosine": drift.cosine, "top1": drift.top1_agreement,
        "top1_meaningful": top1_meaningful(drift), "top1_confident": drift.confident_top1_agreement,
        "confident_samples": drift.confident_samples, "top5": drift.top5_agreement,
        "top5_containment": drift.top5_containment, "drift_samples": drift.samples}
    verdict = {} if validation is None else {
        "budget_min_cosine": budget.min_cosine, "budget_min_top1": budget.min_top1,
        "budget_min_top5": budget.min_top5, "budget_pass": validation.passed,
        "budget_misses": "; ".join(validation.failures)}
    stored = {} if artifact is None else {
        "artifact": str(artifact.path), "artifact_bytes": artifact_bytes(artifact.path), "reused": artifact.reused}
    return Row(**base, precision=precision, flavour=flavour, backend=backend, batch=timing.batch,
               threads=timing.threads, iterations=timing.iterations, median_ms=timing.median_ms,
               p90_ms=timing.p90_ms, p99_ms=timing.p99_ms, mean_ms=timing.mean_ms,
               device_median_ms=timing.device_median_ms, images_per_s=timing.images_per_s,
               **measured, **verdict, **stored)


def _add_speedups(rows: list[Row]) -> None:
    """Speedup of each row against FP32 on its backend and against PyTorch eager, same batch."""
    fp32 = {(r.backend, r.batch): r.median_ms for r in rows if r.precision == "fp32"}
    for r in rows:
        same_backend = fp32.get((r.backend, r.batch))
        eager = fp32.get(("torch", r.batch))
        r.speedup_vs_fp32 = same_backend / r.median_ms if same_backend else None
        r.speedup_vs_eager = eager / r.median_ms if eager else None
