"""Latency and throughput of any runner with ``infer(batch)``, measured the way trtexec does.

Warm-up runs until both a minimum time and a minimum count have passed (caches, allocator and
ORT's first-run graph work are out of the way), then measurement runs until both
``min_iters`` and ``min_seconds`` are reached. Each iteration is timed on its own, so the
median and tail percentiles are real per-inference latencies, not an average in disguise.
A runner that works asynchronously (TensorRT) exposes ``synchronize()``; it is called before
each clock read so the time covers the work, not its launch. A runner that records device time
per execution with CUDA events (``timings_ms``, TensorRT) also gets its median device time, like
trtexec's "GPU Compute Time" beside its end-to-end latency.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from bbruntime.errors import BBExportError

from .runners import Runner


@dataclass(frozen=True)
class TimingOptions:
    """trtexec's defaults: at least 10 measured iterations and at least 3 s, after a warm-up."""

    min_iters: int = 10
    min_seconds: float = 3.0
    warmup_iters: int = 2
    warmup_seconds: float = 0.2
    threads: int | None = None  # intra-op threads of torch and ONNX Runtime; None: library default

    def __post_init__(self) -> None:
        if self.min_iters < 1 or self.warmup_iters < 0:
            raise BBExportError(f"timing needs min_iters >= 1 and warmup_iters >= 0; got {self.min_iters}, "
                                f"{self.warmup_iters}")
        if self.min_seconds < 0 or self.warmup_seconds < 0:
            raise BBExportError(f"timing durations must be >= 0; got min {self.min_seconds} s, "
                                f"warm-up {self.warmup_seconds} s")
        if self.threads is not None and self.threads < 1:
            raise BBExportError(f"--threads must be >= 1; got {self.threads}")


@dataclass(frozen=True)
class Timing:
    """Per-inference latencies of one runner at one batch size, in milliseconds."""

    batch: int
    iterations: int
    seconds: float  # measured wall time, warm-up excluded
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    threads: int
    device_median_ms: float | None = None  # CUDA-event time of the executions alone, where recorded

    @property
    def images_per_s(self) -> float:
        return self.batch * 1000.0 / self.median_ms if self.median_ms > 0 else float("inf")

    def to_dict(self) -> dict:
        return {**asdict(self), "images_per_s": self.images_per_s}


def time_runner(runner: Runner, batch: np.ndarray, options: TimingOptions = TimingOptions()) -> Timing:
    """Warm ``runner`` up, then time ``runner.infer(batch)`` until both minimums are met."""
    sync = getattr(runner, "synchronize", None) or (lambda: None)
    started, done = time.perf_counter(), 0
    while done < options.warmup_iters or time.perf_counter() - started < options.warmup_seconds:
        runner.infer(batch)
        done += 1
    sync()

    device_ms = getattr(runner, "timings_ms", None)
    device_before = len(device_ms) if device_ms is not None else 0
    latencies: list[float] = []
    started = time.perf_counter()
    while len(latencies) < options.min_iters or time.perf_counter() - started < options.min_seconds:
        t = time.perf_counter()
        runner.infer(batch)
        sync()
        latencies.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - started

    ms = np.asarray(latencies) * 1000.0
    return Timing(batch=len(batch), iterations=len(ms), seconds=elapsed,
                  median_ms=float(np.median(ms)), p90_ms=float(np.percentile(ms, 90)),
                  p99_ms=float(np.percentile(ms, 99)), mean_ms=float(ms.mean()), min_ms=float(ms.min()),
                  threads=options.threads or getattr(runner, "threads", 0),
                  device_median_ms=float(np.median(device_ms[device_before:])) if device_ms else None)


def alternating_median_ms(runners: dict[str, Runner], batch: np.ndarray, rounds: int,
                          options: TimingOptions = TimingOptions()) -> dict[str, float]:
    """Each runner timed in alternating rounds (A, B, A, B, ...); per runner the median of its round
    medians. Load from other processes then hits every runner alike: side by side, one run."""
    medians: dict[str, list[float]] = {label: [] for label in runners}
    for _ in range(rounds):
        for label, runner in runners.items():
            medians[label].append(time_runner(runner, batch, options).median_ms)
    return {label: float(np.median(values)) for label, values in medians.items()}
