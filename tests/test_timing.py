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


class QuietProbe:
    """An interference probe that reports a quiet machine (or a busy one, on cue)."""

    busy: list = []

    def __init__(self):
        from harness.metrics.interference import Interference

        share = QuietProbe.busy.pop(0) if QuietProbe.busy else 0.0
        self.result = Interference(wall_s=1.0, ncpu=2, own_cpu_s=1.0, own_cpu_share=0.5, others_cpu_share=share)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def timed(runner, clock, **cfg):
    cfg.setdefault("min_repetition_s", 0)
    return measure(runner, np.zeros((2, 3, 4, 4), np.float32), TimingConfig(**cfg), clock=clock,
                   probe_factory=QuietProbe)


def test_warmup_to_steady_state_then_repetitions():
    clock = FakeClock()
    # five slow warm-up runs (1 s), then 0.1 s: warm-up goes on until the tail is steady
    runner = SteppingRunner(clock, [1.0] * 5 + [0.1] * 500)
    t = timed(runner, clock, warmup=2, min_iterations=6, min_duration_s=0.45, repetitions=3, warmup_max_s=30)
    assert t.warmup_steady and t.warmup_iterations >= 10
    capped = timed(SteppingRunner(clock, [1.0] * 5 + [0.1] * 500), clock, warmup=2, min_iterations=6,
                   min_duration_s=0.45, warmup_max_s=5)
    assert not capped.warmup_steady  # stopped at warmup_max_s while the slow start still dominated
    assert len(t.repetitions) == 3 and all(r["iterations"] == 2 for r in t.repetitions)
    # each repetition: at least 6/3 = 2 iterations and 0.45/3 = 0.15 s of 0.1 s runs
    assert t.iterations == 6 and t.latency_ms_p50 == pytest.approx(100.0)
    assert t.throughput_ips == pytest.approx(2 / 0.1) and t.throughput_ci_lo == pytest.approx(20.0)
    assert t.precise and t.stopped_by == "precision" and not t.contended
    assert runner.synced == runner.i  # synchronised after every run, warm-up included


def test_noisy_repetitions_go_on_until_precise_or_budget():
    clock = FakeClock()
    rng = np.random.default_rng(0)
    runner = SteppingRunner(clock, list(0.1 * np.exp(rng.normal(0, 0.08, 2000))))
    t = timed(runner, clock, warmup=2, min_iterations=3, min_duration_s=0, repetitions=3, max_repetitions=30,
              budget_s=1000, target_rel_halfwidth=0.02)
    assert len([r for r in t.repetitions if r["used"]]) > 3  # more repetitions than the minimum were needed
    assert t.throughput_ci_lo < t.throughput_ips < t.throughput_ci_hi
    assert t.stopped_by in ("precision", "max_reps")
    short = timed(SteppingRunner(clock, list(0.1 * np.exp(rng.normal(0, 0.08, 2000)))), clock,
                  warmup=2, min_iterations=3, min_duration_s=0, repetitions=3, max_repetitions=30, budget_s=0.3)
    assert short.stopped_by == "budget" and len(short.repetitions) == 3


def test_contended_repetition_is_measured_again_and_result_marked():
    clock = FakeClock()
    QuietProbe.busy = [0.4, 0.0, 0.0, 0.0]  # the first repetition had a busy neighbour
    t = timed(SteppingRunner(clock, [0.1] * 500), clock, warmup=2, min_iterations=3, min_duration_s=0,
              repetitions=3)
    assert [r["contended"] for r in t.repetitions] == [True, False, False, False]
    assert [r["kept"] for r in t.repetitions] == [False, True, True, True]
    assert t.n_contended == 1 and not t.contended
    QuietProbe.busy = [0.4] * 20  # busy throughout: redone max_redo times, then kept and marked
    t = timed(SteppingRunner(clock, [0.1] * 500), clock, warmup=2, min_iterations=3, min_duration_s=0,
              repetitions=3, max_redo=2)
    assert t.contended and t.n_contended == 5
    QuietProbe.busy = []


def test_min_iterations_dominates_when_runs_are_slow():
    clock = FakeClock()
    t = timed(SteppingRunner(clock, [2.0] * 50), clock, warmup=0, min_iterations=7, min_duration_s=1.0,
              repetitions=1, max_repetitions=1)
    assert t.iterations == 7


def test_unstable_flag_and_percentiles():
    lat = [0.010] * 8 + [0.030, 0.050]
    t = summarize([lat], batch_size=4, timing_scope="host")
    assert t.cv >= 0.10 and t.unstable
    assert t.latency_ms_p99 == pytest.approx(np.percentile(np.array(lat) * 1e3, 99))
    steady = summarize([[0.010, 0.0101, 0.0099, 0.010]], batch_size=4, timing_scope="host")
    assert not steady.unstable


def test_max_duration_truncates_and_says_so():
    clock = FakeClock()
    t = timed(SteppingRunner(clock, [10.0] * 10), clock, warmup=0, min_iterations=6, min_duration_s=0,
              max_duration_s=25, repetitions=3)
    assert t.truncated and t.stopped_by == "deadline" and len(t.repetitions) < 3


def test_device_scope_uses_device_times():
    clock = FakeClock()
    device_ms = [9.0] * 10 + [2.0] * 200  # warm-up, then 2 ms device compute
    runner = SteppingRunner(clock, [0.5] * 300, scope="device", device_ms=device_ms)
    t = timed(runner, clock, warmup=2, min_iterations=6, min_duration_s=0, repetitions=3, warmup_max_s=30)
    assert t.timing_scope == "device"
    assert t.latency_ms_mean == pytest.approx(2.0)
    # ais_bench's definition: 1000 x batch / mean device ms
    assert t.throughput_ips == pytest.approx(1000 * 2 / 2.0)


def test_stored_latencies_are_bounded_and_statistics_use_all():
    clock = FakeClock()
    durations = [0.001] * 3000 + [0.002] * 3000  # two levels: the p99 needs the tail
    t = timed(SteppingRunner(clock, durations), clock, warmup=0, min_iterations=5400, min_duration_s=0,
              repetitions=1, max_repetitions=1)
    assert t.iterations == 5400 and len(t.latencies_ms) == 1000
    assert t.latencies_stored == "1000 evenly spaced of 5400"
    assert t.latency_ms_p99 == pytest.approx(2.0) and t.latency_ms_p50 == pytest.approx(1.0)
    small = timed(SteppingRunner(clock, [0.01] * 50), clock, warmup=0, min_iterations=20, min_duration_s=0,
                  repetitions=1, max_repetitions=1)
    assert small.latencies_stored == "all" and len(small.latencies_ms) == small.iterations


def test_engine_defaults_are_the_suite_schema_defaults():
    """TimingConfig takes its defaults from TimingSpec (one place); the probe's own default threshold agrees."""
    from dataclasses import asdict

    from harness.config.timing import TimingSpec
    from harness.metrics.interference import DEFAULT_CONTENTION_THRESHOLD

    assert asdict(TimingConfig()) == TimingSpec().model_dump()
    assert TimingConfig().contention_threshold == DEFAULT_CONTENTION_THRESHOLD
