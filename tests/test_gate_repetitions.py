import math

import numpy as np
import pytest

from harness.metrics.interference import Interference
from harness.metrics.repetitions import median_ci, repeat_until_precise, steady_state_start, steady_throughput


# -- warm-up -------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(10))
def test_mser5_finds_the_end_of_an_exponential_warmup(seed):
    rng = np.random.default_rng(seed)
    i = np.arange(300)
    lat = 10.0 * (1 + 1.5 * np.exp(-i / 8.0)) + rng.normal(0, 0.2, i.size)  # +150% decaying, tau 8
    s = steady_state_start(lat)
    # the excess falls under the noise (0.2) after ~8*ln(15/0.2) = 35 samples
    assert 15 <= s <= 60, s


@pytest.mark.parametrize("seed", range(10))
def test_mser5_step_warmup_and_no_warmup(seed):
    rng = np.random.default_rng(100 + seed)
    step = np.r_[np.full(20, 2.0), np.ones(180)] + rng.normal(0, 0.05, 200)
    assert 20 <= steady_state_start(step) <= 25
    flat = 1.0 + rng.normal(0, 0.05, 200)
    assert steady_state_start(flat) <= 30  # may drop a few batches of pure noise, never a big share


def test_mser_short_series_and_steady_throughput():
    assert steady_state_start([1.0, 1.0]) == 0
    assert steady_state_start([5.0, 5.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]) == 2  # plain MSER below 20 samples
    lat = np.r_[np.full(10, 0.2), np.full(40, 0.1)]
    assert steady_throughput(lat, batch_size=8) == pytest.approx(80.0)


# -- the median's interval -----------------------------------------------------
def test_median_ci_methods():
    m, lo, hi = median_ci([3.0, 1.0, 2.0])
    assert m == 2.0 and lo < 2.0 < hi and median_ci([1.0, 2.0, 3.0]).method == "t-log"
    ci = median_ci(list(range(1, 11)))  # k=10: (x_(2), x_(9)), exact coverage 1 - 2*11/1024
    assert ci.method == "order" and (ci.lo, ci.hi) == (2.0, 9.0)
    assert ci.coverage == pytest.approx(1 - 22 / 1024)
    one = median_ci([5.0])
    assert one.median == 5.0 and math.isinf(one.lo) and math.isinf(one.rel_halfwidth)
    with pytest.raises(ValueError):
        median_ci([])


@pytest.mark.parametrize("k", [3, 5, 10])
def test_median_ci_is_calibrated(k):
    """Coverage of the true median under skewed (lognormal x hiccup) repetition noise."""
    rng = np.random.default_rng(k)
    trials = 1500

    def draw(n):
        v = 100 * np.exp(rng.normal(0, 0.02, n))
        return np.where(rng.random(n) < 0.1, v * 0.9, v)

    true_median = float(np.median(draw(400_000)))
    hits = sum(lo <= true_median <= hi for _, lo, hi in (median_ci(draw(k)) for _ in range(trials)))
    # nominal 95% (order statistics: >= 95%); 1500 trials give a +-1.1% standard error
    assert 0.92 <= hits / trials <= 0.995, hits / trials


# -- repeat until precise ------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class FakeProbe:
    """Reports the next scripted others' share; advances nothing itself."""

    def __init__(self, shares):
        self.shares, self.result = shares, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        share = self.shares.pop(0) if self.shares else 0.01
        self.result = Interference(wall_s=1.0, ncpu=2, own_cpu_s=1.0, others_cpu_share=share)


def _runner(values, clock, dur=1.0):
    it = iter(values)

    def measure_once():
        clock.t += dur
        return next(it), {"iters": 10}

    return measure_once


def test_stops_on_precision_with_clean_reps():
    clock = FakeClock()
    res = repeat_until_precise(_runner([100.0, 100.5, 99.8, 100.2, 99.9] * 4, clock), clock=clock,
                               probe_factory=lambda: FakeProbe([]))
    assert res.stopped_by == "precision"
    assert 3 <= len(res.kept) <= 6 and res.rel_halfwidth <= 0.02
    assert res.ci_lo <= res.median <= res.ci_hi and not res.contended
    assert res.reps[0].extra == {"iters": 10}


def test_contended_reps_are_marked_and_redone():
    clock = FakeClock()
    shares = [0.01, 0.6, 0.01, 0.01, 0.01, 0.01]
    values = [100.0, 55.0, 100.3, 99.9, 100.1, 100.0]
    res = repeat_until_precise(_runner(values, clock), clock=clock, probe_factory=lambda: FakeProbe(shares))
    assert res.n_contended == 1 and res.n_redone == 1
    assert res.reps[1].contended and not res.reps[1].kept
    assert 55.0 not in res.values and not res.contended
    assert res.median == pytest.approx(100.0, rel=0.005)


def test_result_stays_contended_when_redo_is_exhausted():
    clock = FakeClock()
    res = repeat_until_precise(_runner([60.0, 58.0, 61.0, 59.0, 62.0, 60.0, 61.0, 60.5, 59.5] * 2, clock),
                               clock=clock, max_redo=2, probe_factory=lambda: FakeProbe([0.7] * 50))
    assert res.contended and res.n_redone == 2
    assert all(r.contended for r in res.kept)


def test_budget_and_max_reps_stop():
    clock = FakeClock()
    noisy = [100.0, 80.0, 120.0, 90.0, 110.0] * 10
    res = repeat_until_precise(_runner(noisy, clock, dur=10.0), clock=clock, time_budget_s=35.0,
                               probe_factory=lambda: FakeProbe([]))
    assert res.stopped_by == "budget" and len(res.reps) == 3  # a fourth would end at 40 s > 35 s
    clock = FakeClock()
    res = repeat_until_precise(_runner(noisy, clock, dur=10.0), clock=clock, time_budget_s=5.0,
                               probe_factory=lambda: FakeProbe([]))
    assert len(res.reps) == 3  # the budget never cuts below min_reps ...
    clock = FakeClock()
    res = repeat_until_precise(_runner(noisy, clock, dur=10.0), clock=clock, time_budget_s=5.0,
                               deadline_s=15.0, probe_factory=lambda: FakeProbe([]))
    assert res.stopped_by == "deadline" and len(res.reps) == 2  # ... the caller's hard deadline does
    clock = FakeClock()
    res = repeat_until_precise(_runner(noisy, clock), clock=clock, max_reps=7, probe_factory=lambda: FakeProbe([]))
    assert res.stopped_by == "max_reps" and len(res.kept) == 7 and res.rel_halfwidth > 0.02
