"""Stage 5: TensorRT engines from the validated ONNX files, and a runner that plugs into validation.

Precision lives in the ONNX file. TensorRT 11 removed the precision builder flags and the INT8
calibrators: every network is strongly typed, so an FP16 engine is built from a mixed-precision
ONNX (float32 I/O) and an INT8 engine from a Q/DQ ONNX, both made and measured on the CPU by
``exporter.quantize`` first. TensorRT 10.x builds those same files strongly typed
(``NetworkDefinitionCreationFlag.STRONGLY_TYPED``, opt-in there, accepted and ignored by 11.x), and
keeps the older route for Jetson (JetPack 6 ships 10.x): ``int8_mode="implicit"`` builds the FP32
ONNX with ``BuilderFlag.INT8`` and an ``IInt8EntropyCalibrator2`` fed from the calibration data.

``tensorrt`` is imported inside functions, so the package and its CPU tests load without it. CUDA
memory and streams come from cuda-python (:mod:`bbruntime.cuda`); the runner is :mod:`bbruntime.trt`'s.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bbruntime import cuda
from bbruntime.errors import BBExportError, ExportError, MissingDependencyError
from bbruntime.trt import TrtRunner, trt_available, trt_version
from calibration.data import load_calibration

from .artifacts import (
    artifact_bytes,
    ensure_writable_dir,
    publish,
    sha256_file,
    staging_dir,
    write_bytes,
    write_json,
)
from .budget import PRECISIONS
from .pipeline import ExportOptions, export_onnx, recorded_validation, subject_of
from .quantize import QuantizeOptions, quantize_model
from .reuse import reusable
from .subject import Logger, StageLog, Subject, validated
from .validate import ValidationReport

INT8_MODES = ("explicit", "implicit")
# Batch profile when the ONNX batch axis is dynamic and the user names no bound.
DEFAULT_MIN_BATCH, DEFAULT_OPT_BATCH, DEFAULT_MAX_BATCH = 1, 8, 32
STRONGLY_TYPED_SOURCE = "strongly-typed ONNX"
CALIBRATOR_SOURCE = "builder flags + calibrator"


# ----------------------------------------------------------------------------- availability

def trt_major() -> int | None:
    """The installed TensorRT's major version, or None where it does not import."""
    try:
        import tensorrt as trt
    except (ImportError, OSError):
        return None
    return int(trt.__version__.split(".")[0])


# ----------------------------------------------------------------------------- plain checks

@dataclass(frozen=True)
class BatchProfile:
    min: int
    opt: int
    max: int

    @property
    def dynamic(self) -> bool:
        return self.min != self.max


def batch_profile(min_batch: int | None, opt_batch: int | None, max_batch: int | None,
                  static_batch: int | None) -> BatchProfile:
    """The engine's batch range. ``static_batch`` is the ONNX input's fixed batch, None if dynamic.

    Unnamed bounds default to 1/8/32, widened to cover the named ones; the result must satisfy
    1 <= min <= opt <= max, or this raises a one-line error saying which bound is off.
    """
    named = {"--min-batch": min_batch, "--opt-batch": opt_batch, "--max-batch": max_batch}
    for flag, value in named.items():
        if value is not None and value < 1:
            raise BBExportError(f"{flag} must be >= 1; got {value}")
    if static_batch is not None:
        off = [f"{flag} {value}" for flag, value in named.items() if value is not None and value != static_batch]
        if off:
            raise BBExportError(f"the ONNX input has a static batch of {static_batch}, so {', '.join(off)} "
                                f"cannot apply; export with --dynamic-batch for a batch range")
        return BatchProfile(static_batch, static_batch, static_batch)
    low = min_batch if min_batch is not None else DEFAULT_MIN_BATCH
    high = max_batch if max_batch is not None else max(DEFAULT_MAX_BATCH, low, opt_batch or 0)
    opt = opt_batch if opt_batch is not None else min(max(DEFAULT_OPT_BATCH, low), high)
    if not low <= opt <= high:
        raise BBExportError(f"batch profile needs min <= opt <= max; got min {low}, opt {opt}, max {high}")
    return BatchProfile(low, opt, high)


def check_precision_request(precision: str, int8_mode: str, major: int | None) -> None:
    """Reject precision/mode combinations TensorRT cannot build, before any work is done."""
    if precision not in PRECISIONS:
        raise BBExportError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if int8_mode not in INT8_MODES:
        raise BBExportError(f"unknown INT8 mode {int8_mode!r}; choose one of {', '.join(INT8_MODES)}")
    if int8_mode == "implicit" and precision != "int8":
        raise BBExportError(f"--int8-mode implicit applies to --precision int8 only, not {precision}")
    if int8_mode == "implicit" and major is not None and major >= 11:
        raise BBExportError(f"--int8-mode implicit needs TensorRT 10.x (calibrators were removed in 11.0; "
                            f"this is {major}.x): use --int8-mode explicit, which builds the Q/DQ ONNX")


def onnx_precision_problem(onnx_path: Path, precision: str) -> str | None:
    """Why ``onnx_path`` cannot be the source of a strongly typed ``precision`` engine, or None.

    A strongly typed build computes exactly the types written in the graph, so an FP32 file built
    as "int8" would be a mislabelled FP32 engine: INT8 needs DequantizeLinear nodes, FP16 needs
    float16 tensors (initializers or Casts to float16).
    """
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    nodes = [node for node in graph.node]
    if precision == "int8":
        return None if any(n.op_type == "DequantizeLinear" for n in nodes) else (
            f"{onnx_path.name} has no DequantizeLinear node: not an explicitly quantized INT8 ONNX")
    if precision == "fp16":
        fp16 = onnx.TensorProto.FLOAT16
        casts = any(n.op_type == "Cast" and any(a.name == "to" and a.i == fp16 for a in n.attribute) for n in nodes)
        return None if casts or any(t.data_type == fp16 for t in graph.initializer) else (
            f"{onnx_path.name} has no float16 tensor: not a mixed-precision FP16 ONNX")
    return None


@dataclass(frozen=True)
class ParserIssue:
    """One ONNX parser error, copied out of TensorRT's ``IParserError``."""

    node: int  # index of the failing node in the graph, -1 where the error is not about one node
    node_name: str
    operator: str
    desc: str
    code: str


def parser_failure_message(onnx_path: Path, issues: Sequence[ParserIssue], version: str) -> str:
    """A summary line, then one line per failing node."""
    lines = [f"TensorRT {version} could not parse {onnx_path}: {len(issues)} error(s)"]
    for issue in issues:
        where = (f"node {issue.node} ({issue.node_name or 'unnamed'}, {issue.operator})" if issue.node >= 0
                 else "graph")
        lines.append(f"  {where}: {issue.desc} [{issue.code}]")
    return "\n".join(lines)


def calibration_key(onnx_sha256: str, data_sha256: str, batch: int) -> str:
    """Short key of an implicit calibration: same ONNX, same data, same batch -> same cache file.
    (TensorRT trusts any cache it is handed; telling a stale one apart is the application's job.)"""
    return hashlib.sha256(f"entropy2|{onnx_sha256}|{data_sha256}|{batch}".encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- the build

@dataclass(frozen=True)
class EngineResult:
    engine_path: Path
    sidecar_path: Path
    sidecar: dict
    seconds: float


def engine_from_onnx(onnx_path: Path, engine_path: Path, *, precision: str, min_batch: int | None = None,
                     opt_batch: int | None = None, max_batch: int | None = None, workspace_gb: float = 4.0,
                     timing_cache: Path | None = None, int8_mode: str = "explicit",
                     calibrator_data: np.ndarray | None = None, calib_cache: Path | None = None) -> EngineResult:
    """Parse ``onnx_path``, build a serialized engine, write it and its ``.json`` sidecar atomically.

    Explicit builds are strongly typed (precision from the ONNX); ``int8_mode="implicit"`` (10.x only)
    sets ``BuilderFlag.INT8`` and calibrates on ``calibrator_data`` (float32 NCHW), reading and
    writing ``calib_cache``. TF32 is switched off: FP32 layers compute in FP32, as measured on the CPU.
    """
    import tensorrt as trt

    implicit = int8_mode == "implicit"
    _check_build(trt, Path(onnx_path), precision, int8_mode, workspace_gb, calibrator_data, calib_cache)
    started = time.perf_counter()
    builder, network, logger, parser = _parsed_network(trt, Path(onnx_path), implicit)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    config.clear_flag(trt.BuilderFlag.TF32)
    profiles = _add_batch_profile(builder, network, config, min_batch, opt_batch, max_batch)
    cache = _load_timing_cache(config, timing_cache)
    calibrator = None
    if implicit:
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = _entropy_calibrator(trt, calibrator_data, calib_cache, profiles[0]["opt"])
        config.int8_calibrator = calibrator
        if any(d < 0 for d in network.get_input(0).shape):
            config.set_calibration_profile(_fixed_profile(builder, network, calibrator.batch_shape))
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"TensorRT {trt.__version__} could not build an engine from {onnx_path} "
                          f"(see the TensorRT messages above)")
    write_bytes(Path(engine_path), plan)
    if timing_cache is not None:
        write_bytes(Path(timing_cache), config.get_timing_cache().serialize())
    seconds = time.perf_counter() - started
    sidecar = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "engine": {"file": Path(engine_path).name, "sha256": sha256_file(Path(engine_path)),
                   "bytes": Path(engine_path).stat().st_size},
        "onnx": {"file": Path(onnx_path).name, "sha256": sha256_file(Path(onnx_path))},
        "precision": precision, "precision_source": CALIBRATOR_SOURCE if implicit else STRONGLY_TYPED_SOURCE,
        "int8_mode": int8_mode if precision == "int8" else None, "tensorrt": trt.__version__, "gpu": _gpu(),
        "profiles": profiles, "workspace_gb": workspace_gb, "tf32": False,
        "timing_cache": {"path": str(timing_cache), "reused": cache} if timing_cache else None,
        "calibration": calibrator.summary() if calibrator else None, "build_seconds": round(seconds, 2),
    }
    sidecar_path = write_json(engine_sidecar_path(Path(engine_path)), sidecar)
    return EngineResult(Path(engine_path), sidecar_path, sidecar, seconds)


def _check_build(trt, onnx_path: Path, precision: str, int8_mode: str, workspace_gb: float,
                 calibrator_data: np.ndarray | None, calib_cache: Path | None) -> None:
    check_precision_request(precision, int8_mode, int(trt.__version__.split(".")[0]))
    if workspace_gb <= 0:
        raise BBExportError(f"--workspace must be > 0 GB; got {workspace_gb}")
    implicit = int8_mode == "implicit"
    if not implicit and (problem := onnx_precision_problem(onnx_path, precision)):
        raise BBExportError(f"cannot build a strongly typed {precision} engine: {problem}")
    if implicit and calibrator_data is None and not (calib_cache and Path(calib_cache).is_file()):
        raise BBExportError("--int8-mode implicit needs calibration data or an existing calibration cache")


def _parsed_network(trt, onnx_path: Path, implicit: bool):
    """Builder, network (strongly typed unless ``implicit``), logger and parser of ``onnx_path``; a
    parse failure names every failing node."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0 if implicit else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        issues = [_parser_issue(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(parser_failure_message(onnx_path, issues, trt.__version__))
    return builder, network, logger, parser


def _parser_issue(error) -> ParserIssue:
    return ParserIssue(node=int(error.node()), node_name=str(error.node_name()),
                       operator=str(error.node_operator()), desc=str(error.desc()), code=str(error.code()))


def _add_batch_profile(builder, network, config, min_batch, opt_batch, max_batch) -> list[dict]:
    """One optimization profile over the batch axis; every other axis must be static."""
    shapes = []
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if any(d < 0 for d in shape[1:]):
            raise BBExportError(f"input {tensor.name} has shape {shape}: only the batch axis may be dynamic")
        shapes.append((tensor.name, shape))
    static = [shape[0] for _, shape in shapes if shape[0] >= 0]
    batches = batch_profile(min_batch, opt_batch, max_batch, static[0] if static else None)
    if batches.dynamic or not static:
        profile = builder.create_optimization_profile()
        for name, shape in shapes:
            profile.set_shape(name, (batches.min, *shape[1:]), (batches.opt, *shape[1:]), (batches.max, *shape[1:]))
        config.add_optimization_profile(profile)
    return [{"input": name, "min": [batches.min, *shape[1:]], "opt": [batches.opt, *shape[1:]],
             "max": [batches.max, *shape[1:]]} for name, shape in shapes]


def _fixed_profile(builder, network, shape: tuple[int, ...]):
    """The calibration profile: TensorRT calibrates a dynamic network at one fixed shape."""
    profile = builder.create_optimization_profile()
    profile.set_shape(network.get_input(0).name, shape, shape, shape)
    return profile


def _load_timing_cache(config, path: Path | None) -> bool:
    """Attach a timing cache (the file's, if there is one). Returns whether an existing one was loaded."""
    if path is None:
        return False
    path = Path(path)
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False):
        raise BBExportError(f"timing cache {path} was written by another TensorRT version or GPU; "
                            f"delete it or pass another --timing-cache")
    return bool(data)


def _entropy_calibrator(trt, data: np.ndarray | None, cache_path: Path | None, opt_shape: list[int]):
    """An ``IInt8EntropyCalibrator2`` over ``data`` in batches of the profile's opt batch (10.x only).

    TensorRT calibrates explicit-batch networks at one fixed shape, so a final partial batch is
    dropped; get_batch_size() is 1 because the shape itself carries the batch.
    """
    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)  # the bindings need the base initialised explicitly
            batch = opt_shape[0]
            if data is not None and len(data) < batch:
                raise BBExportError(f"implicit INT8 calibration needs at least {batch} samples (the profile's "
                                    f"opt batch); got {len(data)}")
            self.batch_shape = (batch, *opt_shape[1:])
            self.starts = iter(range(0, len(data) - batch + 1, batch)) if data is not None else iter(())
            self.images = 0
            self.cache_read = False
            sample_bytes = int(np.prod(self.batch_shape)) * 4
            self.device_batch = cuda.Buffer(sample_bytes)  # one batch, reused: TensorRT reads it before the next
            self.stream = cuda.Stream()

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            start = next(self.starts, None)
            if start is None:
                return None
            chunk = self.device_batch.host_view(np.float32, self.batch_shape)
            chunk[...] = data[start:start + self.batch_shape[0]]
            self.device_batch.to_device(chunk.nbytes, self.stream.handle)
            self.stream.synchronize()
            self.images += len(chunk)
            return [int(self.device_batch.device)]

        def read_calibration_cache(self):
            if cache_path is not None and Path(cache_path).is_file():
                self.cache_read = True
                return Path(cache_path).read_bytes()
            return None

        def write_calibration_cache(self, cache):
            if cache_path is not None:
                write_bytes(Path(cache_path), bytes(cache))

        def summary(self) -> dict:
            return {"algorithm": "entropy2", "batch_shape": list(self.batch_shape), "images": self.images,
                    "cache": str(cache_path) if cache_path else None, "cache_reused": self.cache_read}

    return EntropyCalibrator()


def engine_sidecar_path(engine_path: Path) -> Path:
    return engine_path.with_name(engine_path.name + ".json")


def _gpu() -> dict:
    return asdict(cuda.current_device())


# ----------------------------------------------------------------------------- the command

@dataclass(frozen=True)
class TrtOptions:
    precision: str = "fp32"
    workspace_gb: float = 4.0
    min_batch: int | None = None
    opt_batch: int | None = None
    max_batch: int | None = None
    timing_cache: Path | None = None
    int8_mode: str = "explicit"
    # How the FP16/INT8 ONNX is made (``bbexport quantize``'s options; the flavour is always trt), and
    # the calibration data of an implicit INT8 build. None: quantize's defaults.
    quantization: QuantizeOptions | None = None

    def quantize_options(self) -> QuantizeOptions:
        base = self.quantization or QuantizeOptions(self.precision, flavour="trt")
        return replace(base, precision=self.precision, flavour="trt")


@dataclass(frozen=True)
class TrtOutcome:
    onnx_path: Path
    engine_path: Path
    sidecar_path: Path
    sidecar: dict
    validation: ValidationReport


def trt_from_model(model: str | Subject, options: TrtOptions = TrtOptions(), export: ExportOptions | None = None,
                   log: Logger | None = None) -> TrtOutcome:
    """Every ONNX-side product of ``options.precision``, then the engine, validated against PyTorch; an
    engine built here from the same inputs (ONNX, options, TensorRT version, GPU) is reused.

    Where TensorRT or a CUDA device is missing, raises :class:`MissingDependencyError` (exit 3)
    after the ONNX-side products are written.
    """
    log = log or (lambda entry: None)
    export = export or ExportOptions()
    _check_request(options, export)
    subject = subject_of(model, export)
    calib = None
    if options.int8_mode == "implicit":  # loaded before any export: a bad --calib fails first
        quantization = options.quantize_options()
        calib = load_calibration(quantization.calib, subject.spec, quantization.calib_limit, seed=export.seed,
                                 augment=quantization.calib_augment)
    if options.int8_mode == "explicit" and options.precision != "fp32":
        source = quantize_model(subject, options.quantize_options(), export=export, log=log)
    else:
        source = export_onnx(subject, export, log=log)
    onnx_path, onnx_sha256 = source.onnx_path, source.manifest["onnx"]["sha256"]  # hashed once, by its stage
    if reason := trt_available():
        raise MissingDependencyError(f"TensorRT engine not built: {reason} "
                                     f"(the ONNX-side products are in {onnx_path.parent})")
    engine_path = onnx_path.with_name(f"{subject.name}.{options.precision}.engine")
    inputs = {"stage": "engine", **subject.identity(), "source": onnx_sha256,
              "options": asdict(replace(options, timing_cache=None)), "calibration": calib and calib.sha256,
              "tensorrt": trt_version(), "gpu": _gpu()}
    if (sidecar := reusable(engine_sidecar_path(engine_path), inputs, artifact_key="engine")) is not None:
        log(StageLog("trt", True, 0.0, "re-used: its sidecar records the same inputs", engine_path,
                     artifact_bytes(engine_path)))
        report = recorded_validation(sidecar, subject, options.precision)
        return TrtOutcome(onnx_path, engine_path, engine_sidecar_path(engine_path), sidecar, report)
    return _build_and_validate(subject, onnx_path, engine_path, options, inputs, calib, log)


def _check_request(options: TrtOptions, export: ExportOptions) -> None:
    """Every request TensorRT could not build, rejected before any export work."""
    check_precision_request(options.precision, options.int8_mode, trt_major())
    quantization = options.quantize_options()
    if quantization.calib is not None and options.precision != "int8":
        raise BBExportError(f"--calib applies to --precision int8 only, not {options.precision}")
    if options.precision == "fp32" and quantization != QuantizeOptions("fp32", flavour="trt"):
        raise BBExportError("the quantization options (--method, --exclude, --auto-exclude, …) apply to "
                            "--precision fp16 and int8 only, not fp32")
    batch_profile(options.min_batch, options.opt_batch, options.max_batch,
                  None if export.dynamic_batch else export.batch)


def _build_and_validate(subject: Subject, onnx_path: Path, engine_path: Path, options: TrtOptions, inputs: dict,
                        calib, log: Logger) -> TrtOutcome:
    calib_cache = None
    if calib is not None:
        key = calibration_key(inputs["source"], calib.sha256, batch_profile(
            options.min_batch, options.opt_batch, options.max_batch, None).opt)
        calib_cache = onnx_path.parent / f"{subject.name}.int8.{key}.trtcalib"
    with staging_dir(ensure_writable_dir(onnx_path.parent)) as tmp:
        built = engine_from_onnx(onnx_path, tmp / engine_path.name, precision=options.precision,
                                 min_batch=options.min_batch, opt_batch=options.opt_batch,
                                 max_batch=options.max_batch, workspace_gb=options.workspace_gb,
                                 timing_cache=options.timing_cache, int8_mode=options.int8_mode,
                                 calibrator_data=calib.batch if calib else None, calib_cache=calib_cache)
        log(StageLog("build", True, built.seconds,
                     f"TensorRT {built.sidecar['tensorrt']}, {built.sidecar['precision_source']}"))
        report = validated(subject, TrtRunner(built.engine_path), options.precision, engine_path.name, log)
        sidecar = {**built.sidecar, "inputs": inputs, "model": subject.spec.to_dict(),
                   "weights": asdict(subject.weights), "calibration_data": calib.describe() if calib else None,
                   "validation": report.to_dict()}
        staged_sidecar = write_json(engine_sidecar_path(built.engine_path), sidecar)  # every write before any publish
        engine_path = publish(built.engine_path, engine_path)
        sidecar_path = publish(staged_sidecar, engine_sidecar_path(engine_path))
    log(StageLog("trt", True, built.seconds, path=engine_path, bytes=artifact_bytes(engine_path)))
    return TrtOutcome(onnx_path, engine_path, sidecar_path, sidecar, report)
