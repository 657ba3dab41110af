"""The runner: drift and throughput per family, per precision, per backend, in one table.

For every model: export (or reuse) the validated FP32 ONNX, make (or reuse) each requested
precision, time every artifact on every backend at every batch size against the PyTorch eager
baseline measured in the same run, and hold each row's drift to the flat budget table
``drift_budget.csv``. A model or stage that fails is recorded with its one-line error and the
run goes on. ``write_report`` publishes report.json/.csv/.md/.html together.

Artifacts are reused when the manifest beside them records the same inputs (variant spec,
weights identity, export or quantization settings, source graph hash, library versions) and the
file still has the recorded sha256; anything else is rebuilt. TensorRT engines are rebuilt
every run.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import platform
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np

from bbruntime.errors import BBExportError, first_line
from bbruntime.metrics import Drift
from bbruntime.metrics import drift as metrics_drift
from bbruntime.runners import OrtRunner, int8_runner
from bbruntime.timing import Timing, TimingOptions, time_runner
from calibration import CALIBRATION_PHOTOS, EVALUATION_PHOTOS, preprocess_batch, sample_photos
from model_defs import ModelSpec, get_spec, model_stats, spec_with_size

from .artifacts import artifact_bytes, human_size, publish, sha256_file, staging_dir
from .pipeline import ExportOptions, export_onnx, library_versions, reusable_export
from .runners import TorchRunner, set_torch_threads
from .validate import Budget, format_top1, top1_meaningful
from .weights import build_model

PRECISIONS = ("fp32", "fp16", "int8")
BACKENDS = ("torch", "ort", "trt")
# Each backend gets the INT8 flavour built for it: uint8/int8 Q/DQ for ONNX Runtime's CPU
# provider, symmetric int8 Q/DQ where TensorRT fuses them. ``--int8-flavours cpu,trt`` also runs
# the TensorRT flavour on ONNX Runtime, its Q/DQ as written: TensorRT's arithmetic at float speed,
# the drift of the engine-to-be on a machine without a GPU.
INT8_FLAVOUR = {"ort": "cpu", "trt": "trt"}
DRIFT_BUDGET_FILE = Path(__file__).with_name("drift_budget.csv")
RANDOM_WEIGHTS_NOTE = ("Drift measured on random (BN-recalibrated) weights is a smoke test of the export "
                       "and quantization path, not an accuracy claim: only rows whose weights are a "
                       "trained checkpoint say what a precision costs in accuracy.")

# Columns of report.csv and keys of every row in report.json, in display order.
ROW_FIELDS = (
    "family", "model", "weights", "weights_kind", "params", "gmacs", "img_size",
    "precision", "flavour", "backend", "batch", "threads", "iterations",
    "median_ms", "p90_ms", "p99_ms", "mean_ms", "device_median_ms", "images_per_s", "speedup_vs_fp32", "speedup_vs_eager",
    "max_abs", "mean_abs", "cosine", "top1", "top1_meaningful", "top1_confident", "confident_samples", "top5",
    "drift_samples",
    "budget_min_cosine", "budget_min_top1", "budget_pass", "budget_misses",
    "artifact", "artifact_bytes", "reused",
)


# ----------------------------------------------------------------------------- drift budget


@dataclass(frozen=True)
class BudgetRule:
    match: str  # variant, family or "*"
    precision: str
    min_cosine: float | None
    min_top1: float | None

    def specificity(self, spec: ModelSpec) -> int:
        return 2 if self.match == spec.name else 1 if self.match == spec.family else 0


BUDGET_COLUMNS = ["match", "precision", "min_cosine", "min_top1"]


def load_drift_budget(path: Path = DRIFT_BUDGET_FILE) -> list[BudgetRule]:
    """The budget table; a malformed row is an error naming its line."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise BBExportError(f"cannot read drift budget {path}: {e.strerror or e}") from e
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.DictReader(lines)
    if reader.fieldnames != BUDGET_COLUMNS:
        raise BBExportError(f"{path}: header must be {','.join(BUDGET_COLUMNS)}; got {reader.fieldnames}")
    rules, seen = [], set()
    for number, row in enumerate(reader, start=1):
        try:
            rule = BudgetRule(row["match"].strip(), row["precision"].strip(), _optional_float(row["min_cosine"]),
                              _optional_float(row["min_top1"]))
        except (ValueError, AttributeError) as e:
            raise BBExportError(f"{path}, data row {number}: {e}") from e
        if rule.precision not in PRECISIONS:
            raise BBExportError(f"{path}, data row {number}: precision must be one of {', '.join(PRECISIONS)}; "
                                f"got {rule.precision!r}")
        if (rule.match, rule.precision) in seen:
            raise BBExportError(f"{path}: the row {rule.match},{rule.precision} appears twice")
        seen.add((rule.match, rule.precision))
        rules.append(rule)
    return rules


def _optional_float(cell: str | None) -> float | None:
    cell = (cell or "").strip()
    return float(cell) if cell else None


def budget_for(rules: Sequence[BudgetRule], spec: ModelSpec, precision: str) -> BudgetRule | None:
    """The most specific rule for this variant and precision (None: unchecked)."""
    candidates = [r for r in rules if r.precision == precision and r.match in (spec.name, spec.family, "*")]
    return max(candidates, key=lambda r: r.specificity(spec), default=None)


def budget_misses(rule: BudgetRule | None, drift: dict) -> list[str]:
    """How a row's photo drift (a :class:`Drift` as a dict) misses ``rule``; top-1 counts only where
    the FP32 model's top-1s are meaningful."""
    if rule is None:
        return []
    misses = []
    if rule.min_cosine is not None and drift["cosine"] < rule.min_cosine:
        misses.append(f"cosine {drift['cosine']:.6f} < {rule.min_cosine:g}")
    if rule.min_top1 is not None and top1_meaningful(Drift(**drift)) and drift["confident_top1_agreement"] < rule.min_top1:
        misses.append(f"top-1 {drift['confident_top1_agreement']:.0%} on {drift['confident_samples']} confident "
                      f"photos < {rule.min_top1:.0%}")
    return misses


# ----------------------------------------------------------------------------- artifacts and reuse


@dataclass(frozen=True)
class Artifact:
    """One ONNX file (or engine) with the manifest that says how it was made and how it drifts."""

    path: Path
    manifest: dict
    reused: bool

    @property
    def photo_drift(self) -> dict:
        return self.manifest["validation"]["drift"]["photos"]


def _at(manifest: Mapping, dotted: str):
    value = manifest
    for key in dotted.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def _as_json(value):
    return json.loads(json.dumps(value, default=str))


def reusable_manifest(manifest_path: Path, expected: Mapping[str, object], artifact_key: str = "onnx"
                      ) -> dict | None:
    """The manifest at ``manifest_path`` if every ``expected`` entry (dotted key -> value) matches
    and its artifact still has the recorded sha256; else None (the artifact must be rebuilt)."""
    try:
        manifest = json.loads(Path(manifest_path).read_text())
    except (OSError, ValueError):
        return None
    if any(_at(manifest, key) != _as_json(value) for key, value in expected.items()):
        return None
    artifact = Path(manifest_path).with_name(str(_at(manifest, f"{artifact_key}.file")))
    if not artifact.is_file() or sha256_file(artifact) != _at(manifest, f"{artifact_key}.sha256"):
        return None
    return manifest


def weights_identity(weights: Path | None, seed: int) -> dict[str, object]:
    """What a manifest must record for its weights to be the ones asked for now."""
    if weights is None:
        return {"weights.kind": "random", "weights.seed": seed}
    return {"weights.kind": "checkpoint", "weights.sha256": sha256_file(Path(weights))}


def fp32_artifact(spec: ModelSpec, export: ExportOptions, log=None) -> Artifact:
    """The validated FP32 ONNX for ``export``: the published one if its manifest records the same
    inputs, else a fresh export."""
    reused = reusable_export(spec.name, export, log=log)
    outcome = reused or export_onnx(spec.name, export, log=log)
    return Artifact(outcome.onnx_path, outcome.manifest, reused=reused is not None)


def quantized_artifact(spec: ModelSpec, precision: str, flavour: str, export: ExportOptions, fp32: Artifact,
                       method: str = "entropy", log=None) -> Artifact:
    """The FP16 or INT8 ONNX of ``spec`` made from ``fp32`` by the precision stage, re-used while its
    manifest records the same source graph, options, weights and library versions."""
    from .quantize import QuantizeOptions, quantize_model

    options = (QuantizeOptions(precision, budget=UNCHECKED) if precision == "fp16"
               else QuantizeOptions(precision, flavour=flavour, method=method, budget=UNCHECKED))
    manifest_path = fp32.path.with_name(f"{spec.name}.{options.label}.json")
    expected = {
        "model": spec.to_dict(),
        **weights_identity(export.weights, export.seed),
        "source.sha256": fp32.manifest["onnx"]["sha256"],
        "options": {k: v for k, v in asdict(options).items() if k != "budget"},
        "versions": library_versions(),
    }
    manifest = reusable_manifest(manifest_path, expected)
    if manifest is not None:
        return Artifact(manifest_path.with_name(manifest["onnx"]["file"]), manifest, reused=True)
    outcome = quantize_model(spec.name, options, export=export, log=log)
    return Artifact(outcome.onnx_path, outcome.manifest, reused=False)


# The report holds every precision to drift_budget.csv; the stages it calls check nothing themselves.
UNCHECKED = Budget("report: see drift_budget.csv")


# ----------------------------------------------------------------------------- the run


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
    budget_file: Path = DRIFT_BUDGET_FILE
    cuda_graph: bool = False  # TensorRT rows replay a captured CUDA graph
    int8_method: str = "entropy"  # calibration method of the precision stage (entropy, max, percentile)
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


@dataclass(frozen=True)
class Failure:
    model: str
    family: str
    stage: str
    error: str  # one line
    traceback: str = ""


@dataclass
class Report:
    rows: list[dict]
    failures: list[Failure]
    machine: dict
    settings: dict
    skipped: list[str]  # combinations not measured, and why
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def budget_misses(self) -> list[dict]:
        return [r for r in self.rows if r["budget_pass"] is False]

    def families(self) -> list[str]:
        return sorted({r["family"] for r in self.rows} | {f.family for f in self.failures})

    def summaries(self) -> list[dict]:
        return [family_summary(family, self.rows, self.failures) for family in self.families()]

    def to_dict(self) -> dict:
        return {"schema": "bbexport.report/1", "created": self.created, "note": RANDOM_WEIGHTS_NOTE,
                "machine": self.machine, "settings": self.settings, "rows": self.rows,
                "summaries": self.summaries(), "failures": [asdict(f) for f in self.failures],
                "skipped": self.skipped}


ProgressCallback = Callable[[str, str], None]  # (model, stage); stage MODEL_DONE closes a model
MODEL_DONE = "done"


def run_report(models: Sequence[str], options: ReportOptions = ReportOptions(),
               progress: ProgressCallback | None = None) -> Report:
    """Export, convert, validate and time each model; failures are recorded, never raised."""
    progress = progress or (lambda model, stage: None)
    threads = set_torch_threads(options.timing.threads)
    rules = load_drift_budget(options.budget_file)
    backends, skipped = _available_backends(options)
    rows: list[dict] = []
    failures: list[Failure] = []
    for name in models:
        spec = spec_with_size(get_spec(name), options.img_size)

        def fail(stage: str, error: Exception, spec=spec) -> None:
            kind = "" if isinstance(error, BBExportError) else f"{type(error).__name__}: "
            failures.append(Failure(spec.name, spec.family, stage, kind + first_line(error),
                                    "".join(traceback.format_exception(error))))

        rows.extend(_model_rows(spec, options, backends, rules, lambda stage, n=spec.name: progress(n, stage),
                                fail))
        progress(spec.name, MODEL_DONE)
    settings = {
        "models": list(models), "precisions": list(options.precisions), "backends": list(options.backends),
        "batches": list(options.batches), "img_size": options.img_size,
        "timing": {**asdict(options.timing), "threads": threads}, "artifacts": str(options.artifacts),
        "budget_file": str(options.budget_file), "evaluation_photos": list(EVALUATION_PHOTOS),
        "calibration_photos": list(CALIBRATION_PHOTOS),
        "int8_flavours": {backend: list(_flavours("int8", backend, options)) for backend in BACKENDS[1:]},
        "int8_method": options.int8_method,
    }
    return Report(rows, failures, machine_info(), settings, skipped)


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
    from .trt import trt_available

    return trt_available()


def _model_rows(spec: ModelSpec, options: ReportOptions, backends: tuple[str, ...], rules: list[BudgetRule],
                stage: Callable[[str], None], fail: Callable[[str, Exception], None]) -> list[dict]:
    weights = options.weights.get(spec.name)
    export = ExportOptions(img_size=options.img_size, dynamic_batch=spec.dynamic_batch and max(options.batches) > 1,
                           weights=weights, out=Path(options.artifacts), seed=options.seed)

    def log(entry) -> None:
        stage(f"{entry.stage} {'✓' if entry.ok else '✗'}")

    try:
        stage("export fp32")
        fp32 = fp32_artifact(spec, export, log=log)
        stage("build PyTorch model")
        model, source = build_model(spec.name, weights, options.seed, spec=spec)
        stats = model_stats(spec.name, spec.input_size)
        photos = preprocess_batch([image for _, image in sample_photos(EVALUATION_PHOTOS)], spec)
    except Exception as e:  # noqa: BLE001 - one model's failure is recorded; the run goes on
        fail("export fp32", e)
        return []
    base = {"family": spec.family, "model": spec.name, "weights": source.describe(),
            "weights_kind": source.kind, "params": stats.params, "gmacs": round(stats.gmacs, 4),
            "img_size": spec.input_size[1]}
    reference = TorchRunner(model)
    rows: list[dict] = []

    def measure(precision: str, flavour: str, backend: str, runner, artifact: Artifact | None,
                drift: dict | None) -> None:
        rule = budget_for(rules, spec, precision) if drift else None
        misses = budget_misses(rule, drift) if drift else []
        for batch in options.batches:
            stage(f"time {_label(precision, flavour)} on {backend}, batch {batch}")
            try:
                timing = time_runner(runner, _batch_of(photos, batch), options.timing)
            except Exception as e:  # noqa: BLE001 - recorded; the other rows still get measured
                fail(f"time {_label(precision, flavour)} {backend} b{batch}", e)
                continue
            rows.append(_row(base, precision, flavour, backend, timing, drift, rule, misses, artifact))

    measure("fp32", "", "torch", reference, None, None)
    converted = {("fp32", ""): fp32}  # (precision, flavour) -> artifact: FP16 serves ORT and TensorRT alike
    combinations = [(precision, flavour, backend) for precision in options.precisions
                    for backend in backends if backend != "torch" for flavour in _flavours(precision, backend, options)]
    for precision, flavour, backend in combinations:
        label = _label(precision, flavour)
        try:
            if (precision, flavour) not in converted:
                stage(f"convert to {label}")
                converted[precision, flavour] = quantized_artifact(spec, precision, flavour, export, fp32,
                                                                    options.int8_method, log=log)
            artifact = converted[precision, flavour]
            if backend == "ort":
                runner = (int8_runner(artifact.path, flavour, options.timing.threads) if precision == "int8"
                          else OrtRunner(artifact.path, threads=options.timing.threads))
                drift = artifact.photo_drift
            else:
                stage(f"build TensorRT {label} engine")
                artifact, runner, drift = trt_engine(spec, artifact, precision, options, reference, photos)
        except Exception as e:  # noqa: BLE001 - recorded; other precisions still get measured
            fail(f"{label} {backend}", e)
            continue
        measure(precision, flavour, backend, runner, artifact, drift)
    _add_speedups(rows)
    return rows


def _flavours(precision: str, backend: str, options: ReportOptions) -> tuple[str, ...]:
    """The INT8 flavours ``backend`` runs (TensorRT: its own only); "" for FP32 and FP16."""
    if precision != "int8":
        return ("",)
    if backend == "trt" or options.int8_flavours is None:
        return (INT8_FLAVOUR[backend],)
    return options.int8_flavours


def trt_engine(spec: ModelSpec, source: Artifact, precision: str, options: ReportOptions, reference: TorchRunner,
               photos: np.ndarray) -> tuple[Artifact, object, dict]:
    """A TensorRT engine built from ``source`` for the report's batch sizes, its runner, and its drift
    on the photos against FP32 PyTorch. Engines are rebuilt every run: a plan belongs to one
    TensorRT version and GPU model, which no ONNX manifest records."""
    from .trt import TrtRunner, engine_from_onnx

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
    drift = metrics_drift(reference.infer(photos), runner.infer(photos)).to_dict()
    return Artifact(engine_path, built.sidecar, reused=False), runner, drift


def _static_batch(onnx_path: Path) -> int | None:
    import onnx

    dim = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") else None


def _label(precision: str, flavour: str) -> str:
    return f"{precision}-{flavour}" if flavour else precision


def _batch_of(photos: np.ndarray, batch: int) -> np.ndarray:
    """``batch`` real preprocessed photos (repeated as needed): timing data with real statistics."""
    return np.ascontiguousarray(np.resize(photos, (batch, *photos.shape[1:])))


def _row(base: dict, precision: str, flavour: str, backend: str, timing: Timing, drift: dict | None,
         rule: BudgetRule | None, misses: list[str], artifact: Artifact | None) -> dict:
    row = {**base, "precision": precision, "flavour": flavour, "backend": backend, "batch": timing.batch,
           "threads": timing.threads, "iterations": timing.iterations,
           "median_ms": timing.median_ms, "p90_ms": timing.p90_ms, "p99_ms": timing.p99_ms,
           "mean_ms": timing.mean_ms, "device_median_ms": timing.device_median_ms,
           "images_per_s": timing.images_per_s,
           "speedup_vs_fp32": None, "speedup_vs_eager": None,
           "max_abs": drift and drift["max_abs"], "mean_abs": drift and drift["mean_abs"],
           "cosine": drift and drift["cosine"], "top1": drift and drift["top1_agreement"],
           "top1_meaningful": drift and top1_meaningful(Drift(**drift)),
           "top1_confident": drift and drift["confident_top1_agreement"],
           "confident_samples": drift and drift["confident_samples"],
           "top5": drift and drift["top5_agreement"], "drift_samples": drift and drift["samples"],
           "budget_min_cosine": rule and rule.min_cosine, "budget_min_top1": rule and rule.min_top1,
           "budget_pass": None if rule is None or drift is None else not misses,
           "budget_misses": "; ".join(misses),
           "artifact": str(artifact.path) if artifact else "",
           "artifact_bytes": artifact_bytes(artifact.path) if artifact else None,
           "reused": artifact.reused if artifact else None}
    return {key: row[key] for key in ROW_FIELDS}


def _add_speedups(rows: list[dict]) -> None:
    """Speedup of each row against FP32 on its backend and against PyTorch eager, same batch."""
    fp32 = {(r["backend"], r["batch"]): r["median_ms"] for r in rows if r["precision"] == "fp32"}
    for r in rows:
        same_backend = fp32.get((r["backend"], r["batch"]))
        eager = fp32.get(("torch", r["batch"]))
        r["speedup_vs_fp32"] = same_backend / r["median_ms"] if same_backend else None
        r["speedup_vs_eager"] = eager / r["median_ms"] if eager else None


def family_summary(family: str, rows: Sequence[dict], failures: Sequence[Failure]) -> dict:
    """Worst drift and best speedup of one family, with the rows they come from."""
    mine = [r for r in rows if r["family"] == family]
    drifted = [r for r in mine if r["cosine"] is not None and r["precision"] != "fp32"]
    fast = [r for r in mine if r["speedup_vs_eager"] is not None and r["backend"] != "torch"]
    worst = min(drifted or [r for r in mine if r["cosine"] is not None], key=lambda r: r["cosine"], default=None)
    best = max(fast, key=lambda r: r["speedup_vs_eager"], default=None)
    return {
        "family": family,
        "models": len({r["model"] for r in mine} | {f.model for f in failures if f.family == family}),
        "rows": len(mine),
        "worst_drift": worst and {"model": worst["model"], "precision": _label(worst["precision"], worst["flavour"]),
                                  "backend": worst["backend"], "cosine": worst["cosine"], "top1": worst["top1"]},
        "best_speedup": best and {"model": best["model"], "precision": _label(best["precision"], best["flavour"]),
                                  "backend": best["backend"], "batch": best["batch"],
                                  "speedup_vs_eager": best["speedup_vs_eager"]},
        "budget_misses": sum(r["budget_pass"] is False for r in mine),
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
    lines += [f"budget miss: {r['model']} {_label(r['precision'], r['flavour'])} on {r['backend']}, batch "
              f"{r['batch']}: {r['budget_misses']}" for r in report.budget_misses]
    return lines


# ----------------------------------------------------------------------------- the machine


def machine_info() -> dict:
    """CPU model, cores, GPU and library versions: the header every timing needs."""
    import torch

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        # Timings taken while other processes compete for the cores are not comparable: say so.
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {**library_versions(), **_optional_versions("torchvision", "timm", "matplotlib",
                                                                 "nvidia-modelopt", "tensorrt")},
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _optional_versions(*packages: str) -> dict[str, str]:
    versions = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


# ----------------------------------------------------------------------------- writing


def write_report(report: Report, out: Path) -> dict[str, Path]:
    """Publish report.json, .csv, .md and .html into ``out`` together (each by an atomic rename)."""
    from .report_html import report_html

    out = Path(out)
    texts = {"report.json": json.dumps(report.to_dict(), indent=2, default=str) + "\n",
             "report.csv": report_csv(report), "report.md": report_markdown(report),
             "report.html": report_html(report)}
    paths = {}
    with staging_dir(out) as tmp:
        for filename, text in texts.items():
            (tmp / filename).write_text(text, encoding="utf-8")
            paths[filename.split(".")[1]] = publish(tmp / filename, out / filename)
    return paths


def report_csv(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ROW_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(report.rows)
    return buffer.getvalue()


# Columns of the human-readable tables (Markdown and HTML): header -> cell formatter.
def display_columns() -> list[tuple[str, Callable[[dict], str]]]:
    def num(key, fmt):
        return lambda r: "—" if r[key] is None else format(r[key], fmt)

    return [
        ("Model", lambda r: r["model"]),
        ("Weights", lambda r: r["weights"]),
        ("Precision", lambda r: _label(r["precision"], r["flavour"])),
        ("Backend", lambda r: r["backend"]),
        ("Batch", lambda r: str(r["batch"])),
        ("Median ms", num("median_ms", ".2f")),
        ("p90 ms", num("p90_ms", ".2f")),
        ("p99 ms", num("p99_ms", ".2f")),
        ("img/s", num("images_per_s", ".1f")),
        ("× FP32", lambda r: "—" if r["speedup_vs_fp32"] is None else f"{r['speedup_vs_fp32']:.2f}×"),
        ("× eager", lambda r: "—" if r["speedup_vs_eager"] is None else f"{r['speedup_vs_eager']:.2f}×"),
        ("Max abs", num("max_abs", ".2e")),
        ("Cosine", lambda r: "reference" if r["cosine"] is None else f"{r['cosine']:.6f}"),
        ("Top-1", _top1_cell),
        ("Top-5", num("top5", ".0%")),
        ("Budget", _budget_cell),
        ("Size", lambda r: "—" if r["artifact_bytes"] is None else human_size(r["artifact_bytes"])),
        ("Params", lambda r: f"{r['params'] / 1e6:.2f}M"),
        ("GMACs", num("gmacs", ".3f")),
    ]


def _top1_cell(row: dict) -> str:
    if row["top1"] is None:
        return "—"
    return format_top1(row["top1"], row["top1_meaningful"], row["top1_confident"], row["confident_samples"],
                       row["drift_samples"], not_meaningful=" (n/m)")


def _budget_cell(row: dict) -> str:
    if row["budget_pass"] is None:
        return "—"
    return "pass" if row["budget_pass"] else f"MISS: {row['budget_misses']}"


def grouped_rows(report: Report) -> Iterator[tuple[dict, list[dict], list[Failure]]]:
    """(summary, rows, failures) per family, rows ordered by model, precision, backend, batch."""
    order = {p: i for i, p in enumerate(PRECISIONS)}
    backend_order = {b: i for i, b in enumerate(BACKENDS)}
    for summary in report.summaries():
        family = summary["family"]
        rows = sorted((r for r in report.rows if r["family"] == family),
                      key=lambda r: (r["model"], order[r["precision"]], backend_order[r["backend"]], r["batch"]))
        yield summary, rows, [f for f in report.failures if f.family == family]


def machine_lines(report: Report) -> list[str]:
    m, s = report.machine, report.settings
    timing = s["timing"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return [
        f"Machine: {m['cpu']}, {m['usable_cores']} usable of {m['cores']} cores, GPU: {m['gpu'] or 'none'}; "
        f"{m['os']}, Python {m['python']}; load average {m['load_average_1min']} when the report was written",
        f"Libraries: {versions}",
        f"Timing: warm-up ≥ {timing['warmup_iters']} iterations and ≥ {timing['warmup_seconds']} s, then "
        f"≥ {timing['min_iters']} iterations and ≥ {timing['min_seconds']} s per row; "
        f"{timing['threads']} intra-op threads (torch and ONNX Runtime)",
        f"Drift: against FP32 PyTorch on {len(s['evaluation_photos'])} held-out photos "
        f"({', '.join(s['evaluation_photos'])}); INT8 calibrated on the disjoint set "
        f"({', '.join(s['calibration_photos'])}, {s['int8_method']} calibration); budget {s['budget_file']}",
    ] + (["INT8 flavours: int8-cpu runs through ONNX Runtime's integer kernels; int8-trt on ort runs its Q/DQ "
          "as written — TensorRT's arithmetic, at float speed: its latency is not TensorRT's"]
         if any(r["flavour"] == "trt" and r["backend"] == "ort" for r in report.rows) else [])


def report_markdown(report: Report) -> str:
    columns = display_columns()
    lines = [f"# bbexport report ({report.created})", "", f"> **Note.** {RANDOM_WEIGHTS_NOTE}", ""]
    lines += [f"- {line}" for line in machine_lines(report)]
    lines += [f"- Not measured: {note}" for note in report.skipped]
    for summary, rows, failures in grouped_rows(report):
        lines += ["", f"## {summary['family']}", "", f"**Summary:** {summary_line(summary)}", ""]
        if rows:
            lines.append("| " + " | ".join(h for h, _ in columns) + " |")
            lines.append("|" + "|".join("---" for _ in columns) + "|")
            lines += ["| " + " | ".join(cell(r).replace("|", "\\|") for _, cell in columns) + " |" for r in rows]
        lines += [f"- **FAILED** {f.model} at {f.stage}: {f.error}" for f in failures]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- progress


@contextlib.contextmanager
def live_progress(models: Sequence[str]) -> Iterator[ProgressCallback]:
    """A rich progress display on stderr (model, stage, elapsed); yields the callback for
    :func:`run_report`, which prints one line per finished model."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True)
    columns = (SpinnerColumn(), TextColumn("[bold]{task.fields[model]}[/] {task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("starting", total=len(models), model="")
        started = {}

        def progress(model: str, stage: str) -> None:
            started.setdefault(model, time.perf_counter())
            if stage == MODEL_DONE:
                console.print(f"{model} done in {time.perf_counter() - started[model]:.1f} s")
                bar.advance(task)
            else:
                bar.update(task, description=stage, model=model)

        yield progress
