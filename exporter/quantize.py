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
from calibration.data import CalibrationSet, load_calibration

from .artifacts import artifact_bytes, publish, sha256_file, staging_dir, write_json
from .budget import PRECISIONS
from .calib_cache import (
    FLAVOURS,
    METHODS,
    amax_from_ranges,
    calibrated_ranges,
    default_method,
    write_trt_calibration_cache,
)
from .fp16 import KEEP_FP32_OPS, Fp16Result, fp16_from_onnx, fp16_islands
from .onnx_export import check_onnx
from .pipeline import (
    ExportOptions,
    ExportOutcome,
    export_onnx,
    library_versions,
    recorded_validation,
    subject_of,
)
from .ptq import Int8Source
from .qdq import (
    QdqResult,
    dequantized_consumers,
    qdq_from_onnx,
    resolve_exclusions,
    weight_quantization,
    without_quantization,
)
from .reuse import reusable
from .subject import Logger, StageLog, Subject, raise_on_miss, validated
from .targets import host_target, int8_weights_saturate
from .validate import ValidationReport

QUANTIZED_PRECISIONS = PRECISIONS[1:]  # what this stage makes from the FP32 export
DEFAULT_EXPORT = ExportOptions()
SENSITIVITY_SAMPLES = 8  # calibration samples the --auto-exclude search ranks on (never held-out photos)
TOP1_SEARCH_SAMPLES = 64  # calibration samples a top-1 target is measured on
FALLBACKS = ("fp16", "fp32")  # the precision of layers kept out of INT8 (trt flavour)
SEARCH_METRICS = ("cosine", "top1")  # what an --auto-exclude target is measured in
NODE_PROBES_MAX = 96  # above this many candidates, the search ranks name scopes before nodes


@dataclass(frozen=True)
class QuantizeOptions:
    precision: str  # "fp16" | "int8"
    flavour: str = "trt"  # int8 only: "trt" (symmetric, for TensorRT) | "cpu" (ONNX Runtime's fast path)
    # int8: "percentile" | "entropy" | "max" | "mse"; None: calib_cache.default_method for the weights
    method: str | None = None
    calib: Path | None = None  # image folder, .npy/.npz, or None = the built-in calibration photos
    calib_limit: int | None = None
    calib_augment: bool = True  # a folder of few photos also gives crops of each (calibration.data)
    exclude: tuple[str, ...] = ()  # node names, globs over names, or op types kept in float
    spec_exclusions: bool = True  # int8: also keep the variant's own sensitive layers (spec.int8_keep_float)
    auto_exclude: float | None = None  # target of the per-layer sensitivity search, on auto_exclude_metric
    auto_exclude_metric: str = "cosine"  # "cosine" | "top1" (agreement with FP32 on calibration samples)
    bias_correction: bool = True  # int8: empirical bias correction on the calibration data (exporter.ptq)
    learned_rounding: bool = False  # int8: AdaRound on the calibration data (exporter.rounding)
    fallback: str = "fp16"  # int8 trt flavour: the precision of the layers kept out of INT8 ("fp16" | "fp32")
    # int8 cpu flavour: 7-bit weights, for x86 CPUs without VNNI; None = decide for this machine
    # (exporter.targets).
    reduce_range: bool | None = None

    def __post_init__(self):
        if self.reduce_range is None:  # resolved at once, so manifests and reuse keys hold the decision
            cpu_int8 = self.precision == "int8" and self.flavour == "cpu"
            object.__setattr__(self, "reduce_range", cpu_int8 and int8_weights_saturate(host_target()))

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
    reused: bool = False
    log: list[StageLog] = field(default_factory=list)


@dataclass(frozen=True)
class _Converted:
    """What one conversion made, for the manifest and the outcome."""

    details: dict
    calibration: dict | None
    excluded: tuple[str, ...]
    cache_hit: bool = False
    trt_cache: Path | None = None


def quantize_model(model: str | Subject, options: QuantizeOptions, export: ExportOptions = DEFAULT_EXPORT,
                   log: Logger | None = None, keep_misses: bool = False) -> QuantizeOutcome:
    """Build, validate and publish the FP16 or INT8 ONNX of ``model`` from its FP32 export; a
    published one made from the same inputs is reused. ``keep_misses`` publishes an artifact that
    misses its budget with the verdict recorded (the report), instead of raising."""
    check_quantize_options(options)
    stages: list[StageLog] = []

    def record(entry: StageLog) -> None:
        stages.append(entry)
        if log:
            log(entry)

    subject = subject_of(model, export)
    if options.precision == "int8" and options.method is None:  # resolved first: manifests and reuse keys hold it
        options = replace(options, method=default_method(trained=subject.weights.kind == "checkpoint"))
    calib = (load_calibration(options.calib, subject.spec, options.calib_limit, export.seed, options.calib_augment)
             if options.precision == "int8" else None)  # a bad --calib fails before any export work
    fp32 = export_onnx(subject, export, log=record, keep_misses=keep_misses)
    stem = f"{subject.name}.{options.label}"
    manifest_path = fp32.onnx_path.with_name(f"{stem}.json")
    inputs = quantize_inputs(subject, options, fp32, calib)
    if (manifest := reusable(manifest_path, inputs)) is not None:
        return _reused(subject, options, fp32, manifest_path, manifest, record, stages, keep_misses)
    patterns = options.exclude + (spec_exclusions(subject.spec, options.flavour) if options.precision == "int8"
                                  and options.spec_exclusions else ())
    excluded = resolve_exclusions(onnx.load(str(fp32.onnx_path), load_external_data=False), patterns)
    started = time.perf_counter()
    with staging_dir(fp32.onnx_path.parent) as tmp:
        staged = tmp / f"{stem}.onnx"
        converted = (_fp16_graph(fp32.onnx_path, staged, excluded, record) if options.precision == "fp16"
                     else _int8_graph(fp32.onnx_path, staged, options, calib, excluded, tmp, record))
        check_onnx(staged)
        runner = int8_runner(staged, options.flavour) if options.precision == "int8" else OrtRunner(staged)
        report = validated(subject, runner, options.precision, f"{subject.name} {options.label}", record, keep_misses)
        manifest = _manifest(subject, options, inputs, fp32, staged, patterns, converted, report)
        staged_manifest = write_json(tmp / manifest_path.name, manifest)  # every write before any publish
        onnx_path = publish(staged, manifest_path.with_suffix(".onnx"))
        trt_cache = publish(converted.trt_cache, onnx_path.with_name(converted.trt_cache.name)) \
            if converted.trt_cache is not None else None
        manifest_path = publish(staged_manifest, manifest_path)
    record(StageLog(options.label, True, time.perf_counter() - started, path=onnx_path,
                    bytes=artifact_bytes(onnx_path)))
    return QuantizeOutcome(onnx_path, manifest_path, manifest, report, fp32, converted.excluded, converted.cache_hit,
                           trt_cache, False, stages)


def quantize_inputs(subject: Subject, options: QuantizeOptions, fp32: ExportOutcome,
                    calib: CalibrationSet | None) -> dict:
    """What decides an FP16 or INT8 artifact (:mod:`exporter.reuse`)."""
    return {"stage": options.label, **subject.identity(), "source": fp32.manifest["onnx"]["sha256"],
            "options": asdict(options), "calibration": calib.sha256 if calib is not None else None,
            "versions": library_versions()}


def _reused(subject: Subject, options: QuantizeOptions, fp32: ExportOutcome, manifest_path: Path, manifest: dict,
            record: Logger, stages: list, keep_misses: bool) -> QuantizeOutcome:
    report = recorded_validation(manifest, subject, options.precision)
    onnx_path = manifest_path.with_name(manifest["onnx"]["file"])
    if not keep_misses:
        raise_on_miss(report, str(onnx_path))
    record(StageLog(options.label, True, 0.0, "re-used: its manifest records the same inputs", onnx_path,
                    artifact_bytes(onnx_path)))
    trt_cache = (manifest.get("calibration") or {}).get("trt_cache")
    return QuantizeOutcome(onnx_path, manifest_path, manifest, report, fp32, tuple(manifest["excluded"]["nodes"]),
                           True, onnx_path.with_name(trt_cache) if trt_cache else None, True, stages)


def _fp16_graph(fp32_onnx: Path, staged: Path, excluded: tuple[str, ...], record: Logger) -> _Converted:
    t = time.perf_counter()
    converted = fp16_from_onnx(fp32_onnx, staged, keep_fp32_nodes=excluded)
    record(StageLog("convert", True, time.perf_counter() - t,
                    f"{len(converted.fp32_nodes)} nodes kept in float32, {converted.casts} casts"))
    details = {"fp32_ops": list(KEEP_FP32_OPS), "fp32_nodes": list(converted.fp32_nodes),
               "casts": converted.casts, "clamped_values": converted.clamped_values}
    return _Converted(details, None, excluded)


def _int8_graph(fp32_onnx: Path, staged: Path, options: QuantizeOptions, calib: CalibrationSet,
                excluded: tuple[str, ...], tmp: Path, record: Logger) -> _Converted:
    t = time.perf_counter()
    cache = calibrated_ranges(fp32_onnx, calib, options.method, options.flavour, fp32_onnx.parent / "calibration")
    skipped = f", {len(calib.skipped)} unreadable skipped" if calib.skipped else ""
    record(StageLog("calibrate", True, time.perf_counter() - t, f"{options.method}, {len(calib.batch)} samples"
                    f"{skipped}, " + ("cache hit" if cache.hit else "ranges cached")))
    source = Int8Source(fp32_onnx, functools.partial(_qdq, ranges=cache.path, options=options), calib.batch,
                        tmp, options.bias_correction, options.learned_rounding)
    auto = None
    if options.auto_exclude is not None:
        t = time.perf_counter()
        auto = auto_exclusions(fp32_onnx, source, options, excluded, calib, tmp)
        excluded += tuple(auto["excluded"])
        record(StageLog("auto-exclude", True, time.perf_counter() - t,
                        f"{len(auto['excluded'])} layers kept in float for {options.auto_exclude_metric} "
                        f"≥ {options.auto_exclude}"))
    t = time.perf_counter()
    fallback = fp16_fallback(options, excluded)
    qdq = source.quantize(excluded, tmp / "fp32-fallback.onnx" if fallback else staged)
    islands = fp16_islands(qdq.path, staged, excluded) if fallback else None
    correction = source.correction
    weights_q = weight_quantization(onnx.load(str(staged), load_external_data=False))
    record(StageLog("qdq", True, time.perf_counter() - t,
                    f"{options.flavour}: {len(qdq.quantized_nodes) if options.flavour == 'trt' else 'all'} "
                    f"quantizable nodes, {len(excluded)} kept in {'float16' if fallback else 'float'}"
                    + (f", {source.rounding.layers} weights rounded by learning" if source.rounding else "")
                    + (f", {correction.layers} biases corrected" if correction else "")))
    stem = staged.name.split(".")[0]
    trt_cache = (write_trt_calibration_cache(amax_from_ranges(cache.path), tmp / f"{stem}.int8.calib")
                 if options.flavour == "trt" else None)
    details = {"weights_per_channel": sum(w.per_channel for w in weights_q), "weighted_nodes": len(weights_q),
               "weight_bits": 7 if options.reduce_range else 8,
               "measured_with": "Q/DQ run as written (TensorRT's arithmetic)" if options.flavour == "trt"
               else "ONNX Runtime's integer kernels on this CPU",
               "float_fallback": _fallback_manifest(options, excluded, islands),
               "constants_to_initializers": list(source.constants),
               "bias_correction": correction.to_dict() if correction else None,
               "learned_rounding": source.rounding.to_dict() if source.rounding else None,
               "auto_exclude": auto}
    return _Converted(details, _calibration_manifest(calib, cache, options, trt_cache), excluded, cache.hit, trt_cache)


def spec_exclusions(spec, flavour: str) -> tuple[str, ...]:
    """The layers a variant's spec keeps out of INT8 in this flavour."""
    return spec.int8_keep_float + (spec.int8_keep_float_cpu if flavour == "cpu" else ())


def fp16_fallback(options: QuantizeOptions, excluded: tuple[str, ...]) -> bool:
    """Whether the layers kept out of INT8 compute in float16: the trt flavour's default (a strongly
    typed TensorRT build runs a layer in its ONNX precision; FP32 there would be slow for no gain
    over FP16). The cpu flavour's stay float32: ONNX Runtime's CPU kernels compute float16 by
    casting to float32 anyway."""
    return bool(excluded) and options.flavour == "trt" and options.fallback == "fp16"


def _fallback_manifest(options: QuantizeOptions, excluded: tuple[str, ...], islands: Fp16Result | None) -> dict:
    if islands is None:
        return {"precision": "fp32" if excluded else None, "fp16_nodes": [], "fp32_nodes": list(excluded), "casts": 0}
    kept_fp32 = set(islands.fp32_nodes)
    return {"precision": "fp16", "fp16_nodes": [n for n in excluded if n not in kept_fp32],
            "fp32_nodes": [n for n in excluded if n in kept_fp32], "casts": islands.casts}


def _qdq(src: Path, dst: Path, excluded: tuple[str, ...], ranges: Path, options: QuantizeOptions) -> QdqResult:
    return qdq_from_onnx(src, dst, ranges, options.flavour, options.method, excluded, options.reduce_range)


def check_quantize_options(options: QuantizeOptions) -> None:
    """Every option combination the precision stage cannot make, rejected before any work."""
    if options.precision not in QUANTIZED_PRECISIONS:
        raise BBExportError(f"unknown precision {options.precision!r} (expected {', '.join(QUANTIZED_PRECISIONS)})")
    if options.precision == "int8" and options.flavour not in FLAVOURS:
        raise BBExportError(f"unknown INT8 flavour {options.flavour!r} (expected {', '.join(FLAVOURS)})")
    if options.precision == "int8" and options.method not in (None, *METHODS):
        raise BBExportError(f"unknown calibration method {options.method!r} (expected {', '.join(METHODS)})")
    if options.precision == "fp16" and (options.auto_exclude is not None or options.calib is not None
                                        or options.learned_rounding):
        raise BBExportError("--auto-exclude, --calib and --adaround apply to INT8 only (FP16 needs no calibration)")
    if options.fallback not in FALLBACKS:
        raise BBExportError(f"unknown fallback precision {options.fallback!r} (expected {', '.join(FALLBACKS)})")
    if options.auto_exclude_metric not in SEARCH_METRICS:
        raise BBExportError(f"--auto-exclude: unknown metric {options.auto_exclude_metric!r} "
                            f"(expected {', '.join(SEARCH_METRICS)})")
    if options.auto_exclude is not None and not 0 < options.auto_exclude <= 1:
        raise BBExportError(f"--auto-exclude takes a target in (0, 1], got {options.auto_exclude}")


def parse_search_target(text: str) -> tuple[str, float]:
    """``--auto-exclude``'s TARGET: ``0.995`` or ``cosine=0.995`` (cosine to FP32), ``top1=0.95``
    (top-1 agreement with FP32); both on calibration samples. A bad value is a one-line error."""
    metric, sep, value = text.strip().rpartition("=")
    metric = metric.strip().lower() if sep else "cosine"
    usage = "expected COS, cosine=COS or top1=AGREEMENT with a value in (0, 1], e.g. top1=0.95"
    if metric not in SEARCH_METRICS:
        raise BBExportError(f"--auto-exclude {text!r}: unknown metric {metric!r}; {usage}")
    try:
        target = float(value)
    except ValueError:
        raise BBExportError(f"--auto-exclude {text!r}: {value.strip()!r} is not a number; {usage}") from None
    if not 0 < target <= 1:
        raise BBExportError(f"--auto-exclude {text!r}: {target:g} is outside (0, 1]; {usage}")
    return metric, target


def auto_exclusions(fp32_onnx: Path, source: Int8Source, options: QuantizeOptions, fixed: tuple[str, ...],
                    calib: CalibrationSet, tmp: Path) -> dict:
    """Keep the most sensitive layers in float until the INT8 model reaches the target on the calibration
    samples: a cosine to FP32, or a top-1 agreement with it (``options.auto_exclude_metric``).

    A layer's sensitivity is the cosine lost when it alone is quantized. The graph is quantized
    once; each probe edits that graph (:func:`without_quantization`) rather than re-quantizing,
    and the shortest prefix of the ranking that holds the target is found by bisection. Where
    there are more candidates than ``NODE_PROBES_MAX``, their name scopes are ranked and cut so
    first, and only the nodes of the kept scopes are probed one by one. The
    count is then confirmed on a real re-quantization, or searched for by bisection on them.
    The search measures on calibration samples against the FP32 ONNX, so the held-out photos stay
    unseen until validation: the ranking on ``SENSITIVITY_SAMPLES`` of them (cosine is smooth), a
    top-1 target on up to ``TOP1_SEARCH_SAMPLES`` (agreement over 8 samples moves in steps of 1/8).
    """
    search = _SensitivitySearch(fp32_onnx, source, options, fixed, calib.batch, tmp)
    start = search.target_of(search.quantize(fixed, tmp / "quantized.onnx"))
    target = options.auto_exclude
    result = {"metric": options.auto_exclude_metric, "target": target, "before": start, "after": start,
              "excluded": [], "sensitivity": {}}
    if start >= target:
        return result | {"probes": search.probes}
    units, order = search.ranking(onnx.load(str(tmp / "quantized.onnx")))
    count = search.shortest_prefix(lambda k: search.edited(members_of(units, order[:k])), 1, len(order))
    order += [label for label in units if label not in order]  # scopes left quantized, in rank order
    requantized = functools.cache(lambda k: search.requantized(fixed + members_of(units, order[:k])))
    # The edit follows ORT's Q/DQ placement but not its fusions around an excluded node: the published
    # graph can be short of the edited estimate, so the count is confirmed, or searched, on it.
    if requantized(count) < target:
        count = search.shortest_prefix(requantized, count + 1, len(order))
    chosen, reached = members_of(units, order[:count]), requantized(count)
    if reached < target:
        raise ValidationFailed(f"--auto-exclude {options.auto_exclude_metric}={target}: only {reached:.6f} with "
                               f"every quantizable layer kept in float")
    return result | {"after": reached, "excluded": list(chosen), "probes": search.probes,
                     "sensitivity": {label: round(value, 8) for label, value in
                                     sorted(search.sensitivity.items(), key=lambda item: -item[1])}}


class _SensitivitySearch:
    """The state of one ``--auto-exclude`` search: the samples, their FP32 outputs and the probes run."""

    def __init__(self, fp32_onnx: Path, source: Int8Source, options: QuantizeOptions, fixed: tuple[str, ...],
                 batch, tmp: Path):
        self.source, self.options, self.fixed, self.tmp = source, options, fixed, tmp
        reference = OrtRunner(fp32_onnx)
        self.rank_samples = batch[:SENSITIVITY_SAMPLES]
        self.target_samples = batch[:TOP1_SEARCH_SAMPLES] if options.auto_exclude_metric == "top1" \
            else self.rank_samples
        self.rank_reference = reference.infer(self.rank_samples)
        self.target_reference = reference.infer(self.target_samples)
        self.fp32_graph = onnx.load(str(source.graph_for(fixed)))  # what the edited probes take float weights from
        self.probes = 0
        self.sensitivity: dict[str, float] = {}
        self.edited = functools.cache(self._edited)

    def measured(self, path: Path, ranking: bool) -> float:
        """The ranking's cosine (``ranking``) or the target's metric of the INT8 graph at ``path``."""
        self.probes += 1
        samples, reference = ((self.rank_samples, self.rank_reference) if ranking
                              else (self.target_samples, self.target_reference))
        d = drift(reference, int8_runner(path, self.options.flavour).infer(samples))
        return d.top1_agreement if not ranking and self.options.auto_exclude_metric == "top1" else d.cosine

    def target_of(self, path: Path) -> float:
        return self.measured(path, ranking=False)

    def quantize(self, excluded: tuple[str, ...], path: Path) -> Path:
        return self.source.quantize(excluded, path).path

    def requantized(self, excluded: tuple[str, ...]) -> float:
        return self.target_of(self.quantize(excluded, self.tmp / "probe.onnx"))

    def _edited(self, float_nodes: tuple[str, ...], ranking: bool = False) -> float:
        edited = without_quantization(self.quantized, self.fp32_graph, float_nodes, kept_float=self.fixed)
        onnx.save(edited, str(self.tmp / "probe.onnx"))
        return self.measured(self.tmp / "probe.onnx", ranking)

    def ranked(self, units: dict[str, tuple[str, ...]]) -> list[str]:
        """Units (one node, or a scope's nodes) by the cosine lost when each alone is quantized."""
        for label, nodes in units.items():
            alone = set(nodes)
            self.sensitivity[label] = 1.0 - self.edited(tuple(c for c in self.candidates if c not in alone), True)
        return sorted(units, key=lambda label: -self.sensitivity[label])

    def shortest_prefix(self, cosine_of_prefix, low: int, high: int) -> int:
        """The smallest k in [low, high] whose prefix reaches the target, assuming more float is never worse."""
        while low < high:
            middle = (low + high) // 2
            low, high = (low, middle) if cosine_of_prefix(middle) >= self.options.auto_exclude else (middle + 1, high)
        return low

    def ranking(self, quantized) -> tuple[dict[str, tuple[str, ...]], list[str]]:
        """The units probed (nodes, or name scopes where there are too many nodes) and their ranked order.

        Too many nodes to probe one by one (EfficientNet-B7 has over a thousand): their scopes (blocks)
        are ranked first, then the nodes of the scopes that reach the target together."""
        self.quantized = quantized
        self.candidates = [n for n in dequantized_consumers(quantized) if n not in self.fixed]
        if len(self.candidates) <= NODE_PROBES_MAX:
            units = {n: (n,) for n in self.candidates}
            return units, self.ranked(units)
        scopes = name_scopes(self.candidates, NODE_PROBES_MAX)
        by_scope = self.ranked(scopes)
        kept = self.shortest_prefix(lambda k: self.edited(members_of(scopes, by_scope[:k])), 1, len(by_scope))
        members = members_of(scopes, by_scope[:kept])
        rest = {scope: scopes[scope] for scope in by_scope[kept:]}  # left quantized; the confirmation may need them
        if len(members) > NODE_PROBES_MAX:
            return {scope: scopes[scope] for scope in by_scope}, by_scope[:kept]  # units in rank order
        singles = {n: (n,) for n in members}
        return singles | rest, self.ranked(singles)


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
            "built_in_photos": list(calib.built_in) if options.calib is None else None,
            "cache": {"file": str(cache.path.relative_to(cache.path.parent.parent)), "key": cache.key, "hit": cache.hit},
            "trt_cache": trt_cache.name if trt_cache else None}


def _manifest(subject: Subject, options: QuantizeOptions, inputs: dict, fp32: ExportOutcome, staged: Path,
              patterns: tuple[str, ...], converted: _Converted, report: ValidationReport) -> dict:
    model = onnx.load(str(staged), load_external_data=False)
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "inputs": inputs,
        "model": subject.spec.to_dict(),
        "weights": fp32.manifest["weights"],
        "precision": options.precision,
        "flavour": options.flavour if options.precision == "int8" else None,
        "onnx": {"file": f"{subject.name}.{options.label}.onnx", "sha256": sha256_file(staged),
                 "bytes": artifact_bytes(staged), "nodes": len(model.graph.node),
                 "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                 "input": fp32.manifest["onnx"]["input"], "output": fp32.manifest["onnx"]["output"],
                 "batch": fp32.manifest["onnx"]["batch"]},
        "source": {"file": fp32.onnx_path.name, "sha256": fp32.manifest["onnx"]["sha256"]},
        "calibration": converted.calibration,
        "excluded": {"patterns": list(patterns), "from_spec": [p for p in patterns if p not in options.exclude],
                     "nodes": list(converted.excluded)},
        "details": converted.details,
        "evaluation_photos": list(report.photos),
        "validation": report.to_dict(),
        "options": asdict(options),
        "versions": library_versions(),
    }


def drift_rows(report: ValidationReport) -> list[tuple]:
    """Rows for the console's drift table: top-1 marked where it is not meaningful."""
    from .budget import top1_meaningful
    from .validate import top1_text

    rows = []
    for set_name, d in report.drift.items():
        top1 = top1_text(d)
        rows.append((set_name, d.samples, f"{d.max_abs:.2e}", f"{d.rel_l2:.2e}", f"{d.cosine:.6f}", f"{d.kl:.2e}",
                     top1, f"{d.top5_agreement:.0%}",
                     f"{d.top5_containment:.0%}" + ("" if top1_meaningful(d) else " (not meaningful)")))
    return rows


DRIFT_HEADERS = ("inputs", "n", "max abs", "rel L2", "cosine", "KL", "top-1", "top-5", "top-1 in top-5")
