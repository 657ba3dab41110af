"""Timing: warm-up and measurement minimums (count and time), percentiles, threads."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from bbruntime.errors import BBExportError
from bbruntime.timing import TimingOptions, time_runner
from exporter.runners import set_torch_threads


class CountingRunner:
    """Sleeps a fixed time per call and counts calls and synchronisations."""

    name = "counting"

    def __init__(self, seconds: float = 0.0):
        self.seconds = seconds
        self.calls = 0
        self.syncs = 0

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.seconds:
            time.sleep(self.seconds)
        return batch

    def synchronize(self) -> None:
        self.syncs += 1


BATCH = np.zeros((4, 3, 8, 8), np.float32)


def test_count_bound_when_calls_are_slow():
    runner = CountingRunner(0.01)
    timing = time_runner(runner, BATCH, TimingOptions(min_iters=7, min_seconds=0.0, warmup_iters=3,
                                                      warmup_seconds=0.0))
    assert timing.iterations == 7
    assert runner.calls == 3 + 7
    assert 9.0 <= timing.median_ms < 60.0
    assert timing.min_ms <= timing.median_ms <= timing.p90_ms <= timing.p99_ms


def test_time_bound_when_calls_are_fast():
    runner = CountingRunner(0.0)
    timing = time_runner(runner, BATCH, TimingOptions(min_iters=1, min_seconds=0.05, warmup_iters=0,
                                                      warmup_seconds=0.02))
    assert timing.seconds >= 0.05
    assert timing.iterations > 10  # a no-op runs many times in 50 ms
    assert runner.calls > timing.iterations  # the warm-up ran by time too


def test_throughput_is_batch_over_median():
    timing = time_runner(CountingRunner(0.005), BATCH, TimingOptions(min_iters=5, min_seconds=0.0,
                                                                     warmup_iters=1, warmup_seconds=0.0))
    assert timing.batch == 4
    assert timing.images_per_s == pytest.approx(4000.0 / timing.median_ms)
    assert timing.to_dict()["images_per_s"] == timing.images_per_s


def test_asynchronous_runner_is_synchronised_every_iteration():
    runner = CountingRunner()
    timing = time_runner(runner, BATCH, TimingOptions(min_iters=5, min_seconds=0.0, warmup_iters=2,
                                                      warmup_seconds=0.0))
    assert runner.syncs == 1 + timing.iterations  # once after the warm-up, then once per timed call


def test_device_time_is_read_where_the_runner_records_it():
    class EventRunner(CountingRunner):
        def __init__(self):
            super().__init__()
            self.timings_ms: list[float] = []

        def infer(self, batch):
            self.timings_ms.append(100.0 if self.calls == 0 else 2.0)  # the first (warm-up) call is slow
            return super().infer(batch)

    options = TimingOptions(min_iters=4, min_seconds=0.0, warmup_iters=1, warmup_seconds=0.0)
    assert time_runner(EventRunner(), BATCH, options).device_median_ms == 2.0
    assert time_runner(CountingRunner(), BATCH, options).device_median_ms is None


def test_threads_are_set_and_recorded():
    before = torch.get_num_threads()
    try:
        assert set_torch_threads(1) == 1
        timing = time_runner(CountingRunner(), BATCH, TimingOptions(min_iters=2, min_seconds=0.0, threads=1))
        assert timing.threads == 1
    finally:
        torch.set_num_threads(before)


def test_defaults_are_trtexec_like():
    options = TimingOptions()
    assert (options.min_iters, options.min_seconds) == (10, 3.0)


@pytest.mark.parametrize("bad", [{"min_iters": 0}, {"min_seconds": -1.0}, {"threads": 0}, {"warmup_iters": -1}])
def test_bad_options_are_user_errors(bad):
    with pytest.raises(BBExportError):
        TimingOptions(**bad)
