"""Repetitions as the unit of evidence.

Iterations inside one timed window share the machine's state (frequency,
cache, a neighbour's load), so they are not independent samples: a test on
them calls any state shift "significant". A *repetition* is one timed window;
the spread of repetition throughputs is what a run's interval is built from,
and a repetition disturbed by other processes is redone instead of averaged
in.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from harness.metrics.interference import Interference, InterferenceProbe


# -- warm-up -------------------------------------------------------------------
def steady_state_start(samples, *, batch: int = 5, max_fraction: float = 0.5) -> int:
    """Index where warm-up ends, by the MSER-5 rule.

    MSER (Marginal Standard Error Rule; White 1997, "An effective truncation
    heuristic for bias reduction in simulation output", Simulation 69(6);
    MSER-5 in White, Cobb & Spratt 2000, "A comparison of five steady-state
    truncation heuristics for simulation", Proc. Winter Simulation Conf.)
    truncates the first d batches where d minimises

        MSER(d) = sum_{j>d} (Z_j - mean(Z_{d+1..b}))^2 / (b - d)^2

    over batch means Z of ``batch`` consecutive samples: dropping a biased
    start lowers the spread faster than losing observations raises it.
    Hoad, Robinson & Davies (2010, JORS 61) found MSER-5 the most reliable
    of the automatic rules they compared, with no parameters to tune.

    One change to the published rule: instead of the global minimum, the
    earliest d whose MSER is within two standard errors of it (see the code:
    on a flat tail the global minimum wanders late by chance and throws away
    good samples; in tests, a step warm-up of 20 samples was truncated at 95
    by the plain rule and at 20 by this one).

    As is usual for MSER, d is searched only in the first ``max_fraction`` of
    the batches: near the end the statistic rests on a handful of batches and
    its minimum means nothing. A start at the search limit means the series
    may still be warming up: time a longer window. Series shorter than two
    batches of 5 use single samples (plain MSER).
    """
    x = np.asarray(samples, dtype=np.float64)
    n = x.size
    if n < 4:
        return 0
    if n < 2 * batch * 2:
        batch = 1
    b = n // batch
    z = x[: b * batch].reshape(b, batch).mean(axis=1)
    last = max(0, min(int(b * max_fraction), b - 2))
    mser = [float(((z[d:] - z[d:].mean()) ** 2).sum()) / (b - d) ** 2 for d in range(last + 1)]
    d_min = int(np.argmin(mser))
    # Past the transient the curve is flat and noisy, and its global minimum
    # often lands late by chance (MSER's known over-truncation); the batch
    # variance behind it has a relative standard error of sqrt(2/(m-1)) over m
    # batches. Take the earliest d within two such errors of the minimum:
    # points the statistic cannot tell apart, so keep the most data.
    tol = 2 * math.sqrt(2 / max(b - d_min - 1, 1))
    d_star = next(d for d, m in enumerate(mser) if m <= mser[d_min] * (1 + tol))
    return d_star * batch


def steady_throughput(latencies_s, batch_size: int) -> float:
    """Images/s over the iterations after warm-up (MSER-5 on the latencies)."""
    lat = np.asarray(latencies_s, dtype=np.float64)
    s = steady_state_start(lat)
    return batch_size * (lat.size - s) / float(lat[s:].sum())


# -- the interval of the median across repetitions -----------------------------
class MedianCI(tuple):
    """``(median, lo, hi)``; also ``.method`` ('order' | 't-log' | 'none') and
    ``.coverage`` (the nominal coverage actually achieved: order-statistic
    intervals come in discrete steps, so it is >= the confidence asked)."""

    def __new__(cls, median, lo, hi, method, coverage):
        obj = super().__new__(cls, (float(median), float(lo), float(hi)))
        obj.method, obj.coverage = method, coverage
        return obj

    median = property(lambda self: self[0])
    lo = property(lambda self: self[1])
    hi = property(lambda self: self[2])

    @property
    def rel_halfwidth(self) -> float:
        m, lo, hi = self
        return (hi - lo) / 2 / abs(m) if m and math.isfinite(hi - lo) else math.inf


@cache
def _order_index(k: int, confidence: float) -> tuple[int, float]:
    """Largest j with 1 - 2 P(Binomial(k, 1/2) <= j-1) >= confidence, and that coverage (0 if none)."""
    best, cdf = (0, 0.0), 0.0
    for j in range(1, k // 2 + 1):
        cdf += math.comb(k, j - 1) / 2 ** k  # P(B <= j-1)
        cov = 1 - 2 * cdf
        if cov < confidence:
            break
        best = (j, cov)
    return best


@cache
def _t_quantile(df: int, confidence: float) -> float:
    from scipy import stats  # 0.3 s of start-up, for intervals over fewer than six repetitions only

    return float(stats.t.ppf(0.5 + confidence / 2, df))


def median_ci(values, confidence: float = 0.95) -> MedianCI:
    """Median of repetition values and an interval for the true median.

    - When the sample is large enough, the distribution-free order-statistic
      interval: (x_(j), x_(k+1-j)) covers the median with probability
      1 - 2 P(Binomial(k, 1/2) < j), whatever the distribution; j is the
      largest that still reaches ``confidence``. Exact and assumption-free,
      slightly conservative because coverage moves in steps (k=6: 96.9%,
      k=10: 97.9%).
    - Below that (k < 6 at 95%: even min..max covers only 75% at k=3, 87.5%
      at k=4, 93.75% at k=5) no distribution-free interval exists, so a
      Student t interval on log values (multiplicative noise: throughput
      ratios, not differences, are what is stable; and a repetition's
      throughput is a mean over many iterations, close to normal by the
      CLT). With the t quantile's k-1 degrees of freedom it is honestly wide
      at k=3 (t = 4.30). Its centre is the geometric mean; the interval is
      widened, if needed, to contain the sample median it is reported with.
      ``benchmarks/gate_simulated.py`` measures the calibration of both.
    - k = 1: (v, -inf, inf): no interval, which compares as "overlaps
      everything", never as significant.
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    k = x.size
    if k == 0:
        raise ValueError("median_ci needs at least one value")
    med = float(np.median(x))
    if k == 1:
        return MedianCI(med, -math.inf, math.inf, "none", float("nan"))
    j, cov = _order_index(k, confidence)
    if j >= 1:
        return MedianCI(med, x[j - 1], x[k - j], "order", cov)
    t = _t_quantile(k - 1, confidence)
    if x[0] > 0:
        y = np.log(x)
        c, h = y.mean(), t * y.std(ddof=1) / math.sqrt(k)
        lo, hi = math.exp(c - h), math.exp(c + h)
    else:
        c, h = x.mean(), t * x.std(ddof=1) / math.sqrt(k)
        lo, hi = c - h, c + h
    return MedianCI(med, min(lo, med), max(hi, med), "t-log", confidence)


# -- repeat until precise ------------------------------------------------------
@dataclass
class Rep:
    """One repetition. ``kept`` is False when it was contended and redone."""

    value: float
    extra: dict
    interference: Interference | None
    contended: bool
    kept: bool
    duration_s: float


@dataclass
class RepeatResult:
    median: float
    ci_lo: float
    ci_hi: float
    rel_halfwidth: float
    reps: list[Rep]
    n_contended: int  # contended repetitions measured (redone or kept)
    n_redone: int
    contended: bool  # the result itself is not trustworthy: see repeat_until_precise
    stopped_by: str  # "precision" | "budget" | "max_reps"
    ci_method: str
    elapsed_s: float
    basis: str = "clean"  # which reps the estimate uses: "clean" | "kept" | "all"

    @property
    def kept(self) -> list[Rep]:
        return [r for r in self.reps if r.kept]

    @property
    def used(self) -> list[Rep]:
        """The repetitions the estimate is computed from."""
        return _basis(self.reps, self.basis)

    @property
    def values(self) -> list[float]:
        """The repetition values the estimate is computed from."""
        return [r.value for r in self.used]


def _basis(reps: list[Rep], which: str) -> list[Rep]:
    kept = [r for r in reps if r.kept]
    return {"clean": [r for r in kept if not r.contended], "kept": kept, "all": reps}[which]


def _choose_basis(reps: list[Rep], min_reps: int) -> str:
    # Clean repetitions when there are enough of them: a contended one is
    # known to be biased slow. Otherwise every kept one (the median tolerates
    # a minority of slow values), and if all were redone, whatever we have.
    if len(_basis(reps, "clean")) >= min_reps:
        return "clean"
    return "kept" if _basis(reps, "kept") else "all"


def _split(out) -> tuple[float, dict]:
    if isinstance(out, tuple):
        value, extra = out
        return float(value), dict(extra or {})
    return float(out), {}


def repeat_until_precise(measure_once: Callable[[], Any], *, min_reps: int = 3, max_reps: int = 15,
                         target_rel_halfwidth: float = 0.02, time_budget_s: float = 300.0,
                         contention_threshold: float | None = None, max_redo: int = 3,
                         confidence: float = 0.95, deadline_s: float | None = None,
                         probe_factory: Callable[[], Any] = InterferenceProbe,
                         clock: Callable[[], float] = time.monotonic) -> RepeatResult:
    """Measure repetitions until the median's interval is tight enough.

    ``measure_once()`` runs one timed window and returns its throughput
    (images/s), or ``(throughput, extra_dict)``. Each call runs inside
    ``probe_factory()`` (a context manager whose ``.result`` is an
    ``Interference``). A contended repetition is marked and redone, at most
    ``max_redo`` times in all; after that contended ones are kept, marked.

    Stops at the first of: relative half-width <= ``target_rel_halfwidth``
    with at least ``min_reps`` kept ("precision"); ``max_reps`` kept
    ("max_reps"); the next repetition, at the mean duration so far, would
    overrun ``time_budget_s`` ("budget"; the first ``min_reps`` repetitions always run); ``deadline_s``
    passed, whatever was kept ("deadline": the caller's safety stop).

    The result is ``contended`` when no clean repetition was kept or more
    than half of the kept ones are contended: then its figure describes the
    neighbour as much as the code, and a gate should not judge it.
    """
    if min_reps < 1 or max_reps < min_reps:
        raise ValueError("need 1 <= min_reps <= max_reps")
    t0 = clock()
    reps: list[Rep] = []
    redone = 0
    stopped_by = "max_reps"
    while True:
        kept = [r for r in reps if r.kept]
        if len(kept) >= min_reps:
            ci = median_ci([r.value for r in _basis(reps, _choose_basis(reps, min_reps))], confidence)
            if ci.rel_halfwidth <= target_rel_halfwidth:
                stopped_by = "precision"
                break
        if len(kept) >= max_reps:
            stopped_by = "max_reps"
            break
        if reps and deadline_s is not None and clock() - t0 >= deadline_s:
            stopped_by = "deadline"  # the caller's safety stop, minimum or not
            break
        if len(kept) >= min_reps:  # the minimum always runs (the caller's own deadline aside)
            mean_dur = sum(r.duration_s for r in reps) / len(reps)
            if clock() - t0 + mean_dur > time_budget_s:
                stopped_by = "budget"
                break
        probe = probe_factory()
        a = clock()
        with probe:
            out = measure_once()
        dur = clock() - a
        value, extra = _split(out)
        itf = getattr(probe, "result", None)
        cont = bool(itf.contended(contention_threshold)) if itf is not None else False
        keep = not (cont and redone < max_redo)
        redone += not keep
        reps.append(Rep(value, extra, itf, cont, keep, dur))

    return estimate(reps, min_reps=min_reps, confidence=confidence, stopped_by=stopped_by, n_redone=redone,
                    elapsed_s=clock() - t0)


def estimate(reps: list[Rep], *, min_reps: int, stopped_by: str, n_redone: int = 0, elapsed_s: float,
             confidence: float = 0.95) -> RepeatResult:
    """The median and its interval over measured repetitions, and whether the
    result as a whole is contended: what :func:`repeat_until_precise` ends with,
    and what a Timing of repetitions measured elsewhere is built from."""
    basis = _choose_basis(reps, min_reps)
    ci = median_ci([r.value for r in _basis(reps, basis)], confidence)
    kept = [r for r in reps if r.kept]
    n_kept_cont = sum(r.contended for r in kept)
    contended = (not any(not r.contended for r in kept)) or n_kept_cont > len(kept) / 2
    return RepeatResult(median=ci.median, ci_lo=ci.lo, ci_hi=ci.hi, rel_halfwidth=ci.rel_halfwidth,
                        reps=reps, n_contended=sum(r.contended for r in reps), n_redone=n_redone,
                        contended=contended, stopped_by=stopped_by, ci_method=ci.method,
                        elapsed_s=elapsed_s, basis=basis)
