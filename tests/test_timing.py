"""The timing engine, driven by a fake clock so every figure is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from harness.runners.null import NullRunner
from harness.metrics.timing import TimingConfig, measure, summarize


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class SteppingRunner(NullRunner):
    """Each run advances the fake clock by the next planned duration."""

    def __init__(self, clock, durations, scope="host", device_ms=None):
        super().__init__("cpu")
        self.clock, self.durations, self.i = clock, list(durations), 0
        self.timing_scope = scope
        self._device_ms = device_ms
        self.synced = 0
        self.load(None, (2, 3, 4, 4))

    def run(self, batch):
        self.clock.t += self.durations[min(self.i, len(self.durations) - 1)]
        self.i += 1
        return super().run(batch)

    def synchronize(self):
        self.synced += 1

    def device_times_ms(self):
        return None if self._device_ms is None else self._device_ms[: self.i]


def test_warmup_excluded_and_both_minimums_met():
    clock = FakeClock()
    # warmup runs are slow (1 s), timed runs 0.1 s
    runner = SteppingRunner(clock, [1.0, 1.0] + [0.1] * 100)
    t = measure(runner, np.zeros((2, 3, 4, 4), np.float32),
                TimingConfig(warmup=2, min_iterations=5, min_duration_s=1.0), clock=clock)
    assert t.warmup_iterations == 2 and t.warmup_s == pytest.approx(2.0)
    # 5 iterations are not enough: 1 s needs 10 iterations of 0.1 s
    assert t.iterations == 10
    assert t.latency_ms_p50 == pytest.approx(100.0)
    assert t.throughput_ips == pytest.approx(2 / 0.1)
    assert runner.synced == 12  # synchronised after every run, warmup included
    assert not t.unstable and not t.truncated


def test_min_iterations_dominates_when_runs_are_slow():
    clock = FakeClock()
    t = measure(SteppingRunner(clock, [2.0] * 50), np.zeros((2, 3, 4, 4), np.float32),
                TimingConfig(warmup=0, min_iterations=7, min_duration_s=1.0), clock=clock)
    assert t.iterations == 7


def test_unstable_flag_and_percentiles():
    lat = [0.010] * 8 + [0.030, 0.050]
    t = summarize(lat, batch_size=4, timing_scope="host")
    assert t.cv >= 0.10 and t.unstable
    assert t.latency_ms_p99 == pytest.approx(np.percentile(np.array(lat) * 1e3, 99))
    steady = summarize([0.010, 0.0101, 0.0099, 0.010], batch_size=4, timing_scope="host")
    assert not steady.unstable


def test_max_duration_truncates_and_says_so():
    clock = FakeClock()
    t = measure(SteppingRunner(clock, [10.0] * 10), np.zeros((2, 3, 4, 4), np.float32),
                TimingConfig(warmup=0, min_iterations=5, min_duration_s=0, max_duration_s=25), clock=clock)
    assert t.truncated and t.iterations == 3


def test_device_scope_uses_device_times():
    clock = FakeClock()
    device_ms = [9.0, 9.0] + [2.0] * 20  # 2 warmups, then 2 ms device compute
    runner = SteppingRunner(clock, [0.5] * 30, scope="device", device_ms=device_ms)
    t = measure(runner, np.zeros((2, 3, 4, 4), np.float32),
                TimingConfig(warmup=2, min_iterations=4, min_duration_s=0), clock=clock)
    assert t.timing_scope == "device"
    assert t.latency_ms_mean == pytest.approx(2.0)
    # ais_bench's definition: 1000 x batch / mean device ms
    assert t.throughput_ips == pytest.approx(1000 * 2 / 2.0)
