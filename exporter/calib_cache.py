"""Activation ranges of an FP32 ONNX over calibration data, cached beside the artifacts.

A cache file is named by a key over everything that decides its contents: the FP32 ONNX file's
sha256, the calibration tensors' sha256, the method and the flavour (symmetric ranges for
TensorRT, asymmetric for the CPU). A rerun with the same inputs reads the ranges back instead of
calibrating; any change gives a new key and recalibrates. The ranges are stored in ONNX Runtime's
own calibration-cache JSON, so ``quantize_static(calibration_cache_path=...)`` reads them as is.

Ranges are collected for every float tensor of the graph, not only those the Q/DQ pass needs:
TensorRT's implicit INT8 path wants a scale for each tensor of the network, written by
:func:`write_trt_calibration_cache` in TensorRT's calibration-cache text format.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bbruntime.errors import CalibrationDataError, first_line
from calibration.data import CalibrationSet

from .artifacts import sha256_file, sidecar_of

METHODS = ("entropy", "max", "percentile", "mse")


def default_method(trained: bool) -> str:
    """The calibration method when none is asked for: one rule on what the weights are.

    Trained weights: percentile. Real EfficientNet-Lite1 on augmented crops (docs/int8-real-weights.md),
    with bias correction: top-1 agreement 0.936 against entropy's 0.891 (trt); without, 0.882 against
    0.845. Random BN-recalibrated weights: entropy, the catalog's method (docs/catalog-drift.md); their
    activations have heavier tails, and percentile's near-max ranges cost random EfficientNetV2-S
    INT8-trt cosine 0.972 against entropy's 0.985 (8 calibration views, 128 px), under the 0.98 budget."""
    return "percentile" if trained else "entropy"
FLAVOURS = ("trt", "cpu")
PERCENTILE = 99.999  # of |x| for "percentile": TensorRT's and ONNX Runtime's customary default
RANGES_VERSION = 4  # bump when the range computation changes, so old caches are not read back
ENTROPY_BINS = 4096  # signed bins: 2048 bins of |x|, as TensorRT
# Below this many calibration values a histogram is too sparse for the KL search (an SE block's
# squeezed 1x1 tensors: 8 channels x 22 samples = 176 values over 2048 bins), which then clips
# a real range to a fraction of itself (EfficientNet-B0, cpu flavour: cosine 0.38); such tensors
# keep their full observed range instead.
ENTROPY_MIN_VALUES = 8192
# The KL search never clips more than this share of the values: a tensor with no mass near zero (an
# SE gate's sigmoid, all in [0.09, 0.8]) otherwise scores KL = 0 by clipping *everything* into the
# last bin, and its range collapses below its smallest value.
ENTROPY_MAX_CLIPPED = 1e-3
MSE_CANDIDATES = 256  # clipping thresholds the mse method tries per tensor
CALIBRATION_BATCH = 8  # samples per ONNX Runtime calibration pass
# Histogram methods hold every calibrated tensor of a pass in memory at once: 1.3 GB a sample for
# EfficientNet-B5 at 456 px, 1.2 GB for ViT-L. Past this many bytes a pass, the tensors are split.
CALIBRATION_PASS_BYTES = 2 << 30
INT8_MAX = 127.0
# TensorRT's cache header: "TRT-<getInferLibVersion()>-<calibrator>"; 10.1.0 -> 100100.
TRT_CACHE_VERSION = 100100
TRT_CACHE_ALGORITHM = "EntropyCalibration2"


@dataclass(frozen=True)
class CalibrationCache:
    path: Path  # ONNX Runtime JSON ranges
    key: str
    hit: bool  # True when the ranges were read back rather than calibrated now


def calibration_key(onnx_sha256: str, data_sha256: str, method: str, flavour: str) -> str:
    # How the methods run: a change to any of these, or to the range code itself, recalibrates.
    settings = (f"v{RANGES_VERSION},bins={ENTROPY_BINS},min={ENTROPY_MIN_VALUES},clip={ENTROPY_MAX_CLIPPED},"
                f"percentile={PERCENTILE},mse={MSE_CANDIDATES}")
    return hashlib.sha256(f"{onnx_sha256}|{data_sha256}|{method}|{flavour}|{settings}".encode()).hexdigest()


def ort_calibration_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    if method not in METHODS:
        raise CalibrationDataError(f"unknown calibration method {method!r} (expected {', '.join(METHODS)})")
    # "mse" collects the entropy method's signed histograms and picks its own ranges from them.
    return {"entropy": CalibrationMethod.Entropy, "max": CalibrationMethod.MinMax,
            "percentile": CalibrationMethod.Percentile, "mse": CalibrationMethod.Entropy}[method]


def calibrated_ranges(onnx_path: Path, data: CalibrationSet, method: str, flavour: str, cache_dir: Path
                      ) -> CalibrationCache:
    """The cached ranges for (ONNX, data, method, flavour), calibrating only when none are cached."""
    if flavour not in FLAVOURS:
        raise CalibrationDataError(f"unknown INT8 flavour {flavour!r} (expected {', '.join(FLAVOURS)})")
    key = calibration_key(sha256_file(onnx_path), data.sha256, method, flavour)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{flavour}-{method}-{key[:16]}.json"
    if path.is_file():
        return CalibrationCache(path, key, hit=True)
    _calibrate(onnx_path, data.batch, method, symmetric=flavour == "trt", path=path)
    for stale in cache_dir.glob(f"{flavour}-{method}-*.json"):  # one cache per flavour and method
        if stale != path:
            stale.unlink(missing_ok=True)
    return CalibrationCache(path, key, hit=False)


def _calibrate(onnx_path: Path, batch: np.ndarray, method: str, symmetric: bool, path: Path) -> None:
    from onnxruntime.quantization.calibrate import save_tensors_data

    with tempfile.TemporaryDirectory(prefix="bbexport-calib-") as tmp:
        try:
            calibrator = ort_calibrator(onnx_path, method, symmetric, Path(tmp) / "augmented.onnx")
            input_name = calibrator.infer_session.get_inputs()[0].name
            static_batch = calibrator.infer_session.get_inputs()[0].shape[0]
            passes = calibration_passes(batch, static_batch if isinstance(static_batch, int) else 1)
            with contextlib.redirect_stdout(io.StringIO()):  # ORT prints a line per pass
                if method == "max":  # ORT reduces each tensor to its min and max inside the graph: small
                    for chunk in passes:
                        calibrator.collect_data(Feed(input_name, chunk))
                else:
                    collect_histograms(calibrator, input_name, passes)
                ranges = (_histogram_ranges(calibrator.collector.histogram_dict, symmetric, method)
                          if method in ("entropy", "mse") else calibrator.compute_data())
        except (RuntimeError, ValueError) as e:  # ORT rejects inputs of the wrong shape or dtype
            raise CalibrationDataError(f"calibrating {onnx_path.name} failed: {first_line(e)}") from e
    save_tensors_data(_ranges_only(ranges), path)
    path.chmod(0o644)


def _ranges_only(ranges):
    """The ranges without their histograms: the quantizer reads only each tensor's lowest and highest,
    and 2048-bin histograms of every tensor made the JSON cache tens of MB, seconds to write and read."""
    from onnxruntime.quantization.calibrate import TensorData, TensorsData

    return TensorsData(ranges.calibration_method, {name: TensorData(lowest=np.asarray(t.lowest, np.float32),
                                                                    highest=np.asarray(t.highest, np.float32))
                                                   for name, t in ranges.data.items()})


def ort_calibrator(onnx_path: Path, method: str, symmetric: bool, augmented_path: Path):
    """ONNX Runtime's calibrator for ``method``, on a copy of the graph that outputs every tensor."""
    from onnxruntime.quantization.calibrate import create_calibrator

    options = {"symmetric": symmetric}
    if method == "percentile":
        options["percentile"] = PERCENTILE
    if method in ("entropy", "mse"):  # ORT's default of 128 bins leaves no room to clip: TensorRT's 2048
        options["num_bins"] = ENTROPY_BINS
    return create_calibrator(onnx_path, None, augmented_model_path=str(augmented_path),
                             calibrate_method=ort_calibration_method(method), extra_options=options,
                             use_external_data_format=sidecar_of(onnx_path).exists())


def _histogram_ranges(histograms: dict, symmetric: bool, method: str):
    """Per-tensor ranges from ORT's collected signed histograms: KL-optimal (``entropy``; ORT's own
    search costs seconds per tensor at TensorRT's 2048 bins, minutes for a whole network; this one is
    vectorised) or the least mean squared quantization error (``mse``)."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import TensorsData

    data = {}
    for name, (hist, edges, lowest, highest, _) in histograms.items():
        hist, edges = np.asarray(hist, np.float64), np.asarray(edges, np.float64)
        if method == "mse":
            low, high = mse_range(hist, edges, float(lowest), float(highest), symmetric)
        else:
            threshold = entropy_threshold(hist, edges)
            low = -threshold if symmetric else max(float(lowest), -threshold)
            high = threshold if symmetric else min(float(highest), threshold)
        data[name] = (np.float32(low), np.float32(high), hist, edges)
    return TensorsData(CalibrationMethod.Entropy, data)


def mse_range(hist: np.ndarray, edges: np.ndarray, lowest: float, highest: float, symmetric: bool,
              candidates: int = MSE_CANDIDATES) -> tuple[float, float]:
    """The clipping range of a tensor whose 8-bit quantization has the least expected squared error
    over its histogram: values outside the range cost their distance to it squared, values inside
    the rounding noise step²/12. Candidates clip |x| at 1/candidates ... 1 of its largest value; an
    asymmetric range (uint8) also ends at the observed extremes. As for entropy, the exact zeros after
    a ReLU (the bin at 0) are levelled: they quantize exactly and would pull every range in."""
    centers = (edges[:-1] + edges[1:]) / 2
    weights = hist.copy()
    zero = int(np.clip(np.searchsorted(edges, 0.0, side="right") - 1, 0, len(hist) - 1))  # np.histogram's bin of 0
    neighbours = [weights[i] for i in (zero - 1, zero + 1) if 0 <= i < len(weights)]
    weights[zero] = min([weights[zero], *neighbours])
    amax = max(abs(lowest), abs(highest), 1e-12)
    if weights.sum() <= 0:  # nothing but zeros
        return (-amax, amax) if symmetric else (lowest, highest)
    thresholds = amax * np.arange(1, candidates + 1)[:, None] / candidates
    low = -thresholds if symmetric else np.maximum(lowest, -thresholds)
    high = thresholds if symmetric else np.minimum(highest, thresholds)
    step = (high - low) / (254.0 if symmetric else 255.0)
    error = np.where(centers > high, (centers - high) ** 2,
                     np.where(centers < low, (low - centers) ** 2, step ** 2 / 12.0))
    best = int(np.argmin((error * weights).sum(axis=1)))
    return float(low[best, 0]), float(high[best, 0])


def entropy_threshold(hist: np.ndarray, edges: np.ndarray, quantized_bins: int = 128, candidates: int = 128
                      ) -> float:
    """TensorRT's entropy calibration on a histogram symmetric about 0: the |x| threshold whose
    128-level quantization loses the least information, KL(clipped reference || quantized)."""
    half = len(hist) // 2
    magnitude = hist[half:].copy()  # fold the histogram onto |x|
    magnitude[len(hist) % 2:] += hist[:half][::-1]
    magnitude[0] = magnitude[1]  # the exact zeros after a ReLU are not information to keep: without this
    # spike levelled (as NVIDIA's pytorch-quantization does) every post-ReLU range would be clipped hard
    width = (edges[-1] - edges[0]) / len(hist)
    if magnitude.sum() < ENTROPY_MIN_VALUES or len(magnitude) <= quantized_bins:
        return float(edges[-1])
    best, best_kl = len(magnitude), np.inf
    beyond = np.concatenate([np.cumsum(magnitude[::-1])[::-1], [0.0]])  # beyond[i]: mass in bins >= i
    first = max(quantized_bins, int(np.argmax(beyond <= ENTROPY_MAX_CLIPPED * magnitude.sum())))
    step = max(1, (len(magnitude) - first) // candidates)
    for i in range(first, len(magnitude) + 1, step):
        reference = magnitude[:i].copy()
        reference[-1] += magnitude[i:].sum()  # outliers clip into the last bin
        bounds = np.linspace(0, i, quantized_bins + 1).astype(int)
        starts = bounds[:-1]
        used = magnitude[:i] > 0
        sums = np.add.reduceat(magnitude[:i], starts)
        counts = np.add.reduceat(used.astype(np.float64), starts)
        expanded = np.repeat(np.where(counts > 0, sums / np.maximum(counts, 1), 0.0), np.diff(bounds)) * used
        p = reference / reference.sum()
        q = np.where(p > 0, np.maximum(expanded, 1e-12), 0.0)
        q /= q.sum()
        mask = p > 0
        kl = float((p[mask] * np.log(p[mask] / q[mask])).sum())
        if kl < best_kl:
            best, best_kl = i, kl
    return float(best * width)


def collect_histograms(calibrator, input_name: str, passes: list[list[np.ndarray]],
                        pass_bytes: int = CALIBRATION_PASS_BYTES) -> None:
    """ORT's ``HistogramCalibrater.collect_data``, in bounded memory. ORT keeps every calibrated
    tensor of a pass until the pass ends; each tensor's histogram depends only on its own values
    pass after pass, so the tensors are split into groups that fit ``pass_bytes`` and every group
    sees the same passes: the same histograms for a few more (partial) inference runs."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    session = calibrator.infer_session
    samples = max(sum(len(b) for b in chunk) for chunk in passes)
    groups, group, group_bytes = [], [], 0
    for output in session.get_outputs():
        if output.name not in calibrator.tensors_to_calibrate:
            continue
        size = 4 * int(np.prod([d if isinstance(d, int) else 1 for d in output.shape or ()]))
        if group and (group_bytes + size) * samples > pass_bytes:
            groups.append(group)
            group, group_bytes = [], 0
        group.append(output.name)
        group_bytes += size
    groups.append(group)
    if calibrator.collector is None:
        calibrator.collector = HistogramCollector(
            method=calibrator.method, symmetric=calibrator.symmetric, num_bins=calibrator.num_bins,
            num_quantized_bins=calibrator.num_quantized_bins, percentile=calibrator.percentile,
            scenario=calibrator.scenario)
    inputs = {i.name for i in session.get_inputs()}
    for chunk in passes:
        feeds = _feeds(input_name, chunk)
        for names in groups:
            values = {name: [] for name in names}
            for feed in feeds:
                for name, value in zip(names, session.run(names, feed), strict=True):
                    values[name].append(value.copy() if name in inputs else value)  # ORT may alias inputs
            calibrator.collector.collect(values)


def calibration_passes(batch: np.ndarray, model_batch: int) -> list[list[np.ndarray]]:
    """Calibration passes of at most ``CALIBRATION_BATCH`` samples, fed ``model_batch`` at a time
    (the last group of a static batch is topped up with the first samples)."""
    groups = [batch[i:i + model_batch] for i in range(0, len(batch), model_batch)]
    groups = [g if len(g) == model_batch else np.concatenate([g, batch[: model_batch - len(g)]]) for g in groups]
    per_pass = max(1, CALIBRATION_BATCH // model_batch)
    return [groups[i:i + per_pass] for i in range(0, len(groups), per_pass)]


def _feeds(input_name: str, batches: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """One ONNX Runtime feed per batch, as the float32 contiguous arrays ORT takes."""
    return [{input_name: np.ascontiguousarray(b, dtype=np.float32)} for b in batches]


class Feed:
    """ONNX Runtime's CalibrationDataReader protocol over a list of batches."""

    def __init__(self, input_name: str, batches: list[np.ndarray]):
        self._items = iter(_feeds(input_name, batches))

    def get_next(self):
        return next(self._items, None)

    def __len__(self):
        return 0


def amax_from_ranges(cache_file: Path) -> dict[str, float]:
    """Tensor name -> largest absolute calibrated value, from an ONNX Runtime range cache."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    ranges = load_tensors_data(cache_file)
    return {name: float(np.abs(np.asarray(t.range_value, dtype=np.float64)).max()) for name, t in ranges.data.items()}


def write_trt_calibration_cache(amax: dict[str, float], path: Path, version: int = TRT_CACHE_VERSION,
                                algorithm: str = TRT_CACHE_ALGORITHM) -> Path:
    """TensorRT's calibration cache: a header line, then ``tensor: <float32 scale, big-endian hex>``
    per tensor, with scale = amax / 127 (symmetric int8)."""
    lines = [f"TRT-{version}-{algorithm}"]
    for name, value in sorted(amax.items()):
        scale = max(value, 1e-12) / INT8_MAX
        lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
    path.write_text("\n".join(lines) + "\n")
    return path


def trt_calibration_scales(path: Path) -> dict[str, float]:
    """Tensor name -> scale (amax / 127) from a TensorRT calibration cache file."""
    scales = {}
    for number, line in enumerate(Path(path).read_text().splitlines()[1:], start=2):
        name, sep, hex_value = line.rpartition(": ")
        if not sep:
            raise CalibrationDataError(f"{path}:{number}: not a 'tensor: hex' line: {line!r}")
        scales[name] = struct.unpack(">f", bytes.fromhex(hex_value))[0]
    return scales
