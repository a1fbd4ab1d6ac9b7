"""The gate's interval rule: a change with its 95% interval, and what it can decide.

The unit of evidence is a run's estimate (the median over its repetitions)
with its within-run standard error, taken from the run's stored interval.
Repetitions inside one run share the machine's state that night, so a run's
own interval misses the spread *between* runs; the spread of the key's
clean runs around their mean holds both. So:

- the reference level is the mean (in log space: throughput changes are
  relative) of the reference runs, all of them, not just the last one, and its
  variance is ``max(S², mean s_i²) / n``: the run-level replicates' sample
  variance ``S²`` (between-run spread included), never less than the runs'
  own within-run variances say;
- the between-run variance ``tau² = max(0, S² - mean s_i²)``, pooled over
  every group of runs that has two or more, is added to each candidate run,
  which is one draw of that night-to-night state like any other;
- the change ``d = mean(candidate) - mean(reference)`` gets a Student t
  interval whose degrees of freedom come from the Welch-Satterthwaite
  formula over the between-run part (``sum(n_g - 1)`` df) and the within-run
  part (``sum(k_i - 1)`` df over repetitions): three clean runs pin the
  between-run spread with 2 df, and the interval says so.

Verdicts (``decide``), with T the threshold and the change signed so that
positive is worse:

- regression: the interval excludes 0 and the change is past T;
- pass ("unchanged"): the interval's bad-side bound is inside T;
- improvement: the interval excludes 0 and the change is past T the good way
  (its bad-side bound is inside T too, so it passes);
- inconclusive otherwise, with the half-width that would decide it and about
  how many more repetitions that takes (``needed``).

A candidate whose interval is wide (imprecise, unstable) therefore never
passes on its point estimate: only the bound counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

Z95 = 1.959963984540054


@cache
def _t(df: float, confidence: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2, df))


@dataclass
class RunEstimate:
    """One run's estimate of one metric: the value, and the within-run standard
    error of its log (``inf`` when the run carries no interval)."""

    value: float
    se: float
    reps: int
    run_id: str | None = None


def run_estimate(value: float, lo: float | None, hi: float | None, reps: int, method: str | None = None,
                 run_id: str | None = None, confidence: float = 0.95) -> RunEstimate:
    """From a run's stored interval (harness.metrics.repetitions.median_ci): a
    t interval on log values over k repetitions is t(k-1) standard errors
    wide each side; an order-statistic one is taken as z wide (it covers a
    little more than asked, so this errs wide)."""
    ok = (lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi) and lo > 0
          and hi >= lo and reps >= 2 and value > 0)
    if not ok:
        return RunEstimate(float(value), math.inf, int(reps), run_id)
    q = _t(reps - 1, confidence) if method == "t-log" else Z95
    return RunEstimate(float(value), (math.log(hi) - math.log(lo)) / 2 / q, int(reps), run_id)


@dataclass
class Change:
    rel: float  # candidate / reference - 1, on the pooled means
    lo: float  # its 95% interval
    hi: float
    d: float  # the same in log space
    se: float
    q: float  # the t quantile used
    df: float
    tau: float  # between-run standard deviation (log); nan when unknown
    tau_df: int
    v_ref: float  # variance of the reference mean (log)
    v_cand: float  # variance of the candidate mean (log)
    cand_within: float  # the candidate runs' mean within-run variance (log)
    cand_reps: int  # repetitions per candidate run, on average
    n_ref: int
    n_cand: int
    ref_level: float
    cand_level: float

    @property
    def within_only(self) -> bool:
        """No group had two runs: the between-run spread is unknown and left out."""
        return self.tau_df == 0

    def halfwidth(self) -> float:
        """The interval's relative half-width (for printing)."""
        return (self.hi - self.lo) / 2


def _mean(xs):
    return sum(xs) / len(xs)


def between_run(groups: list[list[RunEstimate]]) -> tuple[float, int]:
    """(tau², df): the between-run variance of log values, pooled over the
    groups with two or more runs; (0, 0) when none has."""
    ss, df, within = 0.0, 0, []
    for g in groups:
        ys = [math.log(r.value) for r in g]
        if len(ys) < 2:
            continue
        m = _mean(ys)
        ss += sum((y - m) ** 2 for y in ys)
        df += len(ys) - 1
        within += [r.se ** 2 for r in g if math.isfinite(r.se)]
    if df == 0:
        return 0.0, 0
    return max(0.0, ss / df - (_mean(within) if within else 0.0)), df


def pooled_change(ref: list[RunEstimate], cand: list[RunEstimate], confidence: float = 0.95) -> Change:
    """The candidate runs' mean against the reference runs' mean, with its interval."""
    if not ref or not cand:
        raise ValueError("pooled_change needs reference and candidate runs")
    tau2, tau_df = between_run([ref, cand])
    yr, yc = [math.log(r.value) for r in ref], [math.log(r.value) for r in cand]
    n, m = len(ref), len(cand)
    s2r = [r.se ** 2 for r in ref]
    s2c = [r.se ** 2 for r in cand]
    wr, wc = _mean(s2r), _mean(s2c)
    v_ref = (tau2 + wr) / n
    if n >= 2 and math.isfinite(v_ref):  # the replicates' own scatter, whichever is larger
        ybar = _mean(yr)
        v_ref = max(v_ref, sum((y - ybar) ** 2 for y in yr) / (n - 1) / n)
    v_cand = (tau2 + wc) / m
    d = _mean(yc) - _mean(yr)
    v = v_ref + v_cand
    base = dict(d=d, tau=math.sqrt(tau2) if tau_df else math.nan, tau_df=tau_df, v_ref=v_ref, v_cand=v_cand,
                cand_within=wc, cand_reps=round(_mean([r.reps for r in cand])), n_ref=n, n_cand=m,
                ref_level=math.exp(_mean(yr)), cand_level=math.exp(_mean(yc)))
    if not math.isfinite(v):
        return Change(math.expm1(d), -math.inf, math.inf, se=math.inf, q=math.inf, df=0.0, **base)
    v_between = tau2 * (1 / n + 1 / m)
    v_within = v - v_between
    df_w = max(1, sum(r.reps - 1 for r in [*ref, *cand]))
    denom = (v_between ** 2 / tau_df if tau_df else 0.0) + v_within ** 2 / df_w
    df = v ** 2 / denom if denom > 0 else float(df_w)
    q = _t(max(df, 1.0), confidence)
    h = q * math.sqrt(v)
    return Change(math.expm1(d), math.expm1(d - h), math.expm1(d + h), se=math.sqrt(v), q=q, df=df, **base)


def _log_threshold(rel: float, higher_is_better: bool) -> float:
    """The threshold as a positive log change in the bad direction."""
    return -math.log1p(-rel) if higher_is_better else math.log1p(rel)


def decide(ch: Change, rel_threshold: float, higher_is_better: bool, *, need_between: bool = True) -> str:
    """regression | improvement | unchanged (pass) | inconclusive. ``need_between``:
    with no group of two runs the between-run spread is unknown, and a within-run
    interval alone decides nothing (`compare A B` of two single runs says False)."""
    bad = -ch.d if higher_is_better else ch.d  # positive: worse
    h = ch.q * ch.se
    t_bad = _log_threshold(rel_threshold, higher_is_better)
    t_good = _log_threshold(rel_threshold, not higher_is_better)
    if not math.isfinite(h) or (need_between and ch.within_only):
        return "inconclusive"
    if bad - h > 0 and bad > t_bad:
        return "regression"
    if bad + h < t_bad:
        return "improvement" if (-bad - h > 0 and -bad > t_good) else "unchanged"
    return "inconclusive"


def bad_bound(ch: Change, higher_is_better: bool) -> float:
    """The interval's bound on the bad side (relative): the lower one for throughput."""
    return ch.lo if higher_is_better else ch.hi


@dataclass
class Need:
    halfwidth: float  # relative half-width of the change's interval that would decide it
    more_reps: int | None  # about this many more repetitions of the candidate (None: remeasuring cannot)
    more_runs: int | None
    text: str


def needed(ch: Change, rel_threshold: float, higher_is_better: bool) -> Need:
    """What precision would decide an inconclusive change, at its current estimate."""
    bad = -ch.d if higher_is_better else ch.d
    t_bad = _log_threshold(rel_threshold, higher_is_better)
    if ch.within_only:
        return Need(math.nan, ch.cand_reps, 1, "the between-run spread of this key is unknown with one clean run "
                                               "a side: needs another clean run of it (or `gate --remeasure`)")
    h_star = t_bad - bad if bad < t_bad else bad  # toward pass, or toward regression
    shown = math.expm1(h_star)
    if h_star <= 1e-4:
        return Need(shown, None, None, f"the change sits at the {rel_threshold:.0%} threshold: no precision decides "
                                       f"it; rerun later")
    q = ch.q if math.isfinite(ch.q) else Z95
    v_star = (h_star / q) ** 2
    if not math.isfinite(ch.v_ref) or ch.v_ref >= v_star:
        return Need(shown, None, None, f"needs ±{shown:.1%}, but the reference alone is wider: "
                                       f"more clean history runs are needed, not a remeasure")
    per_run = (ch.tau ** 2 if ch.tau_df else 0.0) + ch.cand_within
    if not math.isfinite(per_run):
        return Need(shown, None, None, f"needs ±{shown:.1%}; the candidate has no run-level interval: rerun it")
    runs = max(ch.n_cand, math.ceil(per_run / (v_star - ch.v_ref)))
    reps_per_run = max(ch.cand_reps, 1)
    more_runs = max(1, runs - ch.n_cand)
    more = more_runs * reps_per_run
    return Need(shown, more, more_runs,
                f"needs ±{shown:.1%}: about {more} more repetitions ({more_runs} more run(s) of {reps_per_run})")
