"""The precision stage: validated FP32 ONNX -> FP16 or INT8 ONNX, validated against FP32 PyTorch.

``quantize_model`` re-uses (or makes) the FP32 export, writes ``<model>.fp16.onnx``,
``<model>.int8-trt.onnx`` or ``<model>.int8-cpu.onnx`` beside it with a ``.json`` manifest, and
holds the drift on the held-out photos to the precision's budget. A miss raises
:class:`ValidationFailed` with the numbers and publishes nothing: there is no fallback to
another precision.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import onnx

from bbruntime.errors import BBExportError, ValidationFailed
from bbruntime.metrics import drift
from bbruntime.runners import OrtRunner, int8_runner
from calibration import CALIBRATION_PHOTOS, EVALUATION_PHOTOS
from calibration.data import CalibrationSet, load_calibration
from model_defs import get_spec, spec_with_size

from .artifacts import artifact_bytes, publish, sha256_file, staging_dir, write_json
from .calib_cache import FLAVOURS, METHODS, amax_from_ranges, calibrated_ranges, write_trt_calibration_cache
from .fp16 import KEEP_FP32_OPS, fp16_from_onnx
from .onnx_export import check_onnx
from .pipeline import (
    ExportOptions,
    ExportOutcome,
    Logger,
    StageLog,
    export_onnx,
    library_versions,
    reusable_export,
)
from .qdq import (
    dequantized_consumers,
    host_int8_saturates,
    qdq_from_onnx,
    resolve_exclusions,
    weight_quantization,
    without_quantization,
)
from .runners import TorchRunner
from .validate import FP16_BUDGET, INT8_BUDGET, Budget, ValidationReport, validate_against, validation_inputs
from .weights import build_model

PRECISIONS = ("fp16", "int8")
DEFAULT_EXPORT = ExportOptions()
SENSITIVITY_SAMPLES = 8  # calibration samples the --auto-exclude search measures on (never held-out photos)
NODE_PROBES_MAX = 96  # above this many candidates, the search ranks name scopes before nodes


@dataclass(frozen=True)
class QuantizeOptions:
    precision: str  # "fp16" | "int8"
    flavour: str = "trt"  # int8 only: "trt" (symmetric, for TensorRT) | "cpu" (ONNX Runtime's fast path)
    method: str = "entropy"  # int8: "entropy" | "max" | "percentile"
    calib: Path | None = None  # image folder, .npy/.npz, or None = the built-in calibration photos
    calib_limit: int | None = None
    exclude: tuple[str, ...] = ()  # node names, globs over names, or op types kept in float
    spec_exclusions: bool = True  # int8: also keep the variant's own sensitive layers (spec.int8_keep_float)
    auto_exclude: float | None = None  # target cosine for the per-layer sensitivity search
    budget: Budget | None = None  # None = the precision's default budget
    # int8 cpu flavour: 7-bit weights, for x86 CPUs without VNNI; None = decide for this machine.
    reduce_range: bool | None = None

    def __post_init__(self):
        if self.reduce_range is None:  # resolved at once, so manifests and reuse keys hold the decision
            cpu_int8 = self.precision == "int8" and self.flavour == "cpu"
            object.__setattr__(self, "reduce_range", cpu_int8 and host_int8_saturates())

    @property
    def label(self) -> str:
        return "fp16" if self.precision == "fp16" else f"int8-{self.flavour}"


@dataclass(frozen=True)
class QuantizeOutcome:
    onnx_path: Path
    manifest_path: Path
    manifest: dict
    validation: ValidationReport
    fp32: ExportOutcome
    excluded: tuple[str, ...]
    calibration_cache_hit: bool
    trt_calibration_cache: Path | None = None  # TensorRT's calibration cache (int8-trt only)
    log: list[StageLog] = field(default_factory=list)


def quantize_model(name: str, options: QuantizeOptions, export: ExportOptions = DEFAULT_EXPORT,
                   log: Logger | None = None) -> QuantizeOutcome:
    """Build, validate and publish the FP16 or INT8 ONNX of ``name`` from its FP32 export."""
    _check_options(options)
    stages: list[StageLog] = []

    def record(entry: StageLog) -> None:
        stages.append(entry)
        if log:
            log(entry)

    fp32 = reusable_export(name, export, log=record) or export_onnx(name, export, log=record)
    spec = spec_with_size(get_spec(name), export.img_size)
    final_dir = fp32.onnx_path.parent
    stem = f"{spec.name}.{options.label}"
    budget = options.budget or (FP16_BUDGET if options.precision == "fp16" else INT8_BUDGET)
    model, _ = build_model(spec.name, export.weights, export.seed, spec=spec)
    inputs = validation_inputs(spec, seed=export.seed)
    reference = {set_name: TorchRunner(model).infer(batch) for set_name, batch in inputs.items()}
    fp32_graph = onnx.load(str(fp32.onnx_path), load_external_data=False)
    patterns = options.exclude + (spec.int8_keep_float if options.precision == "int8" and options.spec_exclusions
                                  else ())
    excluded = resolve_exclusions(fp32_graph, patterns)
    started = time.perf_counter()
    with staging_dir(final_dir) as tmp:
        staged = tmp / f"{stem}.onnx"
        t = time.perf_counter()
        if options.precision == "fp16":
            converted = fp16_from_onnx(fp32.onnx_path, staged, keep_fp32_nodes=excluded)
            details = {"fp32_ops": list(KEEP_FP32_OPS), "fp32_nodes": list(converted.fp32_nodes),
                       "casts": converted.casts, "clamped_values": converted.clamped_values}
            record(StageLog("convert", True, time.perf_counter() - t,
                            f"{len(converted.fp32_nodes)} nodes kept in float32, {converted.casts} casts"))
            calibration, cache_hit, trt_cache = None, False, None
        else:
            calib = load_calibration(options.calib, spec, options.calib_limit, export.seed)
            cache = calibrated_ranges(fp32.onnx_path, calib, options.method, options.flavour, final_dir / "calibration")
            skipped = f", {len(calib.skipped)} unreadable skipped" if calib.skipped else ""
            record(StageLog("calibrate", True, time.perf_counter() - t,
                            f"{options.method}, {len(calib.batch)} samples{skipped}, "
                            + ("cache hit" if cache.hit else "ranges cached")))
            auto = None
            if options.auto_exclude is not None:
                t = time.perf_counter()
                auto = auto_exclusions(fp32.onnx_path, cache.path, options, excluded, calib, tmp)
                excluded += tuple(auto["excluded"])
                record(StageLog("auto-exclude", True, time.perf_counter() - t,
                                f"{len(auto['excluded'])} layers kept in float for cosine ≥ {options.auto_exclude}"))
            t = time.perf_counter()
            qdq = qdq_from_onnx(fp32.onnx_path, staged, cache.path, options.flavour, options.method, excluded,
                                options.reduce_range)
            weights_q = weight_quantization(onnx.load(str(staged), load_external_data=False))
            record(StageLog("qdq", True, time.perf_counter() - t,
                            f"{options.flavour}: {len(qdq.quantized_nodes) if options.flavour == 'trt' else 'all'} "
                            f"quantizable nodes, {len(excluded)} kept in float"))
            trt_cache = None
            if options.flavour == "trt":
                trt_cache = write_trt_calibration_cache(amax_from_ranges(cache.path), tmp / f"{spec.name}.int8.calib")
            calibration = _calibration_manifest(calib, cache, options, trt_cache)
            details = {"weights_per_channel": sum(w.per_channel for w in weights_q), "weighted_nodes": len(weights_q),
                       "weight_bits": 7 if options.reduce_range else 8,
                       "measured_with": "Q/DQ run as written (TensorRT's arithmetic)" if options.flavour == "trt"
                       else "ONNX Runtime's integer kernels on this CPU",
                       "auto_exclude": auto}
            cache_hit = cache.hit
        check_onnx(staged)
        t = time.perf_counter()
        runner = int8_runner(staged, options.flavour) if options.precision == "int8" else OrtRunner(staged)
        report = validate_against(reference, runner, inputs, budget)
        photos = report.drift["photos"]
        record(StageLog("validate", report.passed, time.perf_counter() - t,
                        f"photos: cosine {photos.cosine:.6f}, top-1 {photos.top1_agreement:.0%}"))
        if not report.passed:
            raise ValidationFailed(f"{spec.name} {options.label} misses its budget: " + "; ".join(report.failures))
        manifest = _manifest(spec, options, fp32, staged, calibration, patterns, excluded, details, report)
        onnx_path = publish(staged, final_dir / f"{stem}.onnx")
        if trt_cache is not None:
            trt_cache = publish(trt_cache, final_dir / trt_cache.name)
        manifest_path = write_json(final_dir / f"{stem}.json", manifest)
    record(StageLog(options.label, True, time.perf_counter() - started, path=onnx_path,
                    bytes=artifact_bytes(onnx_path)))
    return QuantizeOutcome(onnx_path, manifest_path, manifest, report, fp32, excluded, cache_hit, trt_cache, stages)


def _check_options(options: QuantizeOptions) -> None:
    if options.precision not in PRECISIONS:
        raise BBExportError(f"unknown precision {options.precision!r} (expected {', '.join(PRECISIONS)})")
    if options.precision == "int8" and options.flavour not in FLAVOURS:
        raise BBExportError(f"unknown INT8 flavour {options.flavour!r} (expected {', '.join(FLAVOURS)})")
    if options.precision == "int8" and options.method not in METHODS:
        raise BBExportError(f"unknown calibration method {options.method!r} (expected {', '.join(METHODS)})")
    if options.precision == "fp16" and (options.auto_exclude is not None or options.calib is not None):
        raise BBExportError("--auto-exclude and --calib apply to INT8 only (FP16 needs no calibration)")
    if options.auto_exclude is not None and not 0 < options.auto_exclude <= 1:
        raise BBExportError(f"--auto-exclude takes a target cosine in (0, 1], got {options.auto_exclude}")


def auto_exclusions(fp32_onnx: Path, ranges: Path, options: QuantizeOptions, fixed: tuple[str, ...],
                    calib: CalibrationSet, tmp: Path) -> dict:
    """Keep the most sensitive layers in float until the INT8 model's cosine to FP32 reaches the target.

    A layer's sensitivity is the cosine lost when it alone is quantized. The graph is quantized
    once; each probe edits that graph (:func:`without_quantization`) rather than re-quantizing,
    and the shortest prefix of the ranking that holds the target is found by bisection. Where
    there are more candidates than ``NODE_PROBES_MAX``, their name scopes are ranked and cut so
    first, and only the nodes of the kept scopes are probed one by one. The
    count is then confirmed on a real re-quantization, or searched for by bisection on them.
    The search measures on calibration samples against the FP32 ONNX, so the held-out photos stay
    unseen until validation.
    """
    samples = calib.batch[:SENSITIVITY_SAMPLES]
    reference = OrtRunner(fp32_onnx).infer(samples)
    fp32_graph = onnx.load(str(fp32_onnx))
    probes = 0

    def cosine_of(path: Path) -> float:
        nonlocal probes
        probes += 1
        return drift(reference, int8_runner(path, options.flavour).infer(samples)).cosine

    def quantize(excluded: tuple[str, ...], path: Path) -> Path:
        return qdq_from_onnx(fp32_onnx, path, ranges, options.flavour, options.method, excluded,
                             options.reduce_range).path

    def requantized(excluded: tuple[str, ...]) -> float:
        return cosine_of(quantize(excluded, tmp / "probe.onnx"))

    start_path = quantize(fixed, tmp / "quantized.onnx")
    start = cosine_of(start_path)
    result = {"target": options.auto_exclude, "cosine_before": start, "cosine_after": start, "excluded": [],
              "sensitivity": {}}
    if start >= options.auto_exclude:
        return result | {"probes": probes}
    quantized = onnx.load(str(start_path))
    candidates = [n for n in dequantized_consumers(quantized) if n not in fixed]

    @functools.cache
    def edited(float_nodes: tuple[str, ...]) -> float:
        onnx.save(without_quantization(quantized, fp32_graph, float_nodes), str(tmp / "probe.onnx"))
        return cosine_of(tmp / "probe.onnx")

    def ranked(units: dict[str, tuple[str, ...]]) -> list[str]:
        """Units (one node, or a scope's nodes) by the cosine lost when each alone is quantized."""
        for label, nodes in units.items():
            alone = set(nodes)
            sensitivity[label] = 1.0 - edited(tuple(c for c in candidates if c not in alone))
        return sorted(units, key=lambda label: -sensitivity[label])

    def shortest_prefix(cosine_of_prefix, low: int, high: int) -> int:
        """The smallest k in [low, high] whose prefix reaches the target, assuming more float is never worse."""
        while low < high:
            middle = (low + high) // 2
            low, high = (low, middle) if cosine_of_prefix(middle) >= options.auto_exclude else (middle + 1, high)
        return low

    sensitivity: dict[str, float] = {}
    if len(candidates) <= NODE_PROBES_MAX:
        units = {n: (n,) for n in candidates}
        order, rest = ranked(units), []
    else:
        # Too many nodes to probe one by one (EfficientNet-B7 has over a thousand): rank their
        # scopes (blocks) first, then the nodes of the scopes that reach the target together.
        scopes = name_scopes(candidates, NODE_PROBES_MAX)
        by_scope = ranked(scopes)
        kept = shortest_prefix(lambda k: edited(members_of(scopes, by_scope[:k])), 1, len(by_scope))
        members = members_of(scopes, by_scope[:kept])
        rest = by_scope[kept:]  # left quantized; the confirmation below may still need them
        if len(members) <= NODE_PROBES_MAX:
            singles = {n: (n,) for n in members}
            units, order = singles | {scope: scopes[scope] for scope in rest}, ranked(singles)
        else:
            units, order = scopes, by_scope[:kept]
    count = shortest_prefix(lambda k: edited(members_of(units, order[:k])), 1, len(order))
    order += rest
    requantized_cosine = functools.cache(lambda k: requantized(fixed + members_of(units, order[:k])))
    # ORT keeps an excluded layer's input quantized where another consumer shares it: the published
    # graph can be short of the edited estimate, so the count is confirmed, or searched, on it.
    if requantized_cosine(count) < options.auto_exclude:
        count = shortest_prefix(requantized_cosine, count + 1, len(order))
    chosen, cosine = members_of(units, order[:count]), requantized_cosine(count)
    if cosine < options.auto_exclude:
        raise ValidationFailed(f"--auto-exclude {options.auto_exclude}: cosine only {cosine:.6f} with every "
                               f"quantizable layer kept in float")
    return result | {"cosine_after": cosine, "excluded": list(chosen), "probes": probes,
                     "sensitivity": {label: round(value, 8) for label, value in
                                     sorted(sensitivity.items(), key=lambda item: -item[1])}}


def name_scopes(nodes: list[str], limit: int) -> dict[str, tuple[str, ...]]:
    """``nodes`` grouped by the deepest scope of their names (``/blocks/blocks.3/blocks.3.1/…``)
    that makes at most ``limit`` groups, in graph order."""
    for depth in range(max(n.count("/") for n in nodes), 0, -1):
        groups: dict[str, list[str]] = {}
        for n in nodes:
            groups.setdefault("/".join(n.split("/")[:depth]), []).append(n)
        if len(groups) <= limit:
            return {scope: tuple(members) for scope, members in groups.items()}
    return {"": tuple(nodes)}


def members_of(groups: dict[str, tuple[str, ...]], labels) -> tuple[str, ...]:
    return tuple(n for label in labels for n in groups[label])


def _calibration_manifest(calib: CalibrationSet, cache, options: QuantizeOptions, trt_cache: Path | None) -> dict:
    return {"method": options.method, "flavour": options.flavour, "data": calib.describe(),
            "built_in_photos": list(CALIBRATION_PHOTOS) if options.calib is None else None,
            "cache": {"file": str(cache.path.relative_to(cache.path.parent.parent)), "key": cache.key, "hit": cache.hit},
            "trt_cache": trt_cache.name if trt_cache else None}


def _manifest(spec, options: QuantizeOptions, fp32: ExportOutcome, staged: Path, calibration: dict | None,
              patterns: tuple[str, ...], excluded: tuple[str, ...], details: dict, report: ValidationReport) -> dict:
    model = onnx.load(str(staged), load_external_data=False)
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": spec.to_dict(),
        "weights": fp32.manifest["weights"],
        "precision": options.precision,
        "flavour": options.flavour if options.precision == "int8" else None,
        "onnx": {"file": f"{spec.name}.{options.label}.onnx", "sha256": sha256_file(staged),
                 "bytes": artifact_bytes(staged), "nodes": len(model.graph.node),
                 "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                 "input": fp32.manifest["onnx"]["input"], "output": fp32.manifest["onnx"]["output"],
                 "batch": fp32.manifest["onnx"]["batch"]},
        "source": {"file": fp32.onnx_path.name, "sha256": fp32.manifest["onnx"]["sha256"]},
        "calibration": calibration,
        "excluded": {"patterns": list(patterns), "from_spec": [p for p in patterns if p not in options.exclude],
                     "nodes": list(excluded)},
        "details": details,
        "evaluation_photos": list(EVALUATION_PHOTOS),
        "validation": report.to_dict(),
        "options": {k: v for k, v in asdict(replace(options, budget=None)).items() if k != "budget"},
        "versions": library_versions(),
    }


def drift_rows(report: ValidationReport) -> list[tuple]:
    """Rows for the console's drift table: top-1 marked where it is not meaningful."""
    from .validate import top1_text

    rows = []
    for set_name, d in report.drift.items():
        top1 = top1_text(d)
        rows.append((set_name, d.samples, f"{d.max_abs:.2e}", f"{d.rel_l2:.2e}", f"{d.cosine:.6f}", f"{d.kl:.2e}",
                     top1, f"{d.top5_agreement:.0%}"))
    return rows


DRIFT_HEADERS = ("inputs", "n", "max abs", "rel L2", "cosine", "KL", "top-1", "top-5")
