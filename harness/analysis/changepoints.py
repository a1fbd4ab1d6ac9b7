"""Change points in one benchmark key's history, and who to suspect.

A nightly gate that compares tonight with "the last 5 runs" asks the wrong
question twice: the reference moves with every slow night, and a step that
happened last week either keeps failing or is silently absorbed. The question
is "where did the level of this series change, and by how much?": change-point
detection over per-run estimates, one point per run, contended runs skipped.

Library: ruptures (PELT, L2 cost). Chosen over the alternatives after
installing each here (Python 3.11, numpy 2.4, scipy 1.17):

- ``signal-processing-algorithms`` 2.1.6 (MongoDB's E-Divisive means): works,
  and E-Divisive with a permutation test is a good fit in principle, but it
  requires ``numpy<2`` and Python ``<3.12`` (installing it downgrades numpy
  to 1.26, which the harness's runtimes do not accept), pulls in gevent and
  structlog, and its last release was December 2024. The permutation test is
  also random: the same history can pass one night and fail the next unless
  seeded, and with 10-30 points its p-values are coarse.
- ``apache-otava`` 0.8.0 (the successor of DataStax's Hunter; the PyPI name
  ``hunter`` is an unrelated code-tracing tool): the best method fit on
  paper (E-Divisive split + t-test merge, built for CI performance series,
  deterministic), but it pins ``numpy==2.2.0`` and ``scipy<1.17``
  (downgrading both) and brings 40+ packages (BigQuery, Postgres, Slack,
  Grafana clients) for one function; it is an incubating 0.x project whose
  analysis API is internal to its CLI.
- ``ruptures`` 1.1.10: BSD, depends on numpy and scipy only (no pins), works
  with the versions installed, well documented, exact and deterministic
  (PELT returns the optimal penalised segmentation: the same history always
  gives the same answer). It finds change points but does not test them, so
  the significance rule is ours; that is a feature here, because the rule
  must use the run-level intervals anyway. Caveats: releases are slow
  (``Requires-Python <3.14`` until a new release, deepcharles/ruptures#360)
  and its PELT is pure Python, O(n^2) worst case, fine for the ~10-200 runs
  a gate looks at.

Method, and why each piece:

1. Work in log(value): throughput noise and changes are relative.
2. Noise scale sigma = max(MAD of first differences / sqrt(2), median
   run-level half-width / z). The MAD of differences estimates the run-to-
   run spread robustly even across a step (a step moves one difference); the
   run-level intervals are a floor, since a run cannot agree with its
   neighbours better than its own repetitions agree with each other.
   Run-level intervals alone are *not* the noise scale: they hold only the
   within-run spread, and night-to-night machine state adds to it; using
   them alone would rebuild the old bug one level up.
3. PELT with penalty ``penalty_factor * sigma^2 * log(n)`` (a BIC-type
   penalty for a mean shift in Gaussian noise of known scale) and minimum
   segment ``min_segment`` proposes change points.
4. Each proposal must pass: relative change between the medians of the
   segments either side >= ``rel_threshold`` AND the two segments' intervals
   (median +- z * 1.25 * sigma / sqrt(m); 1.25 ~ the median's efficiency
   loss) do not overlap. The threshold says what size matters; the
   non-overlap says it is not noise (and is conservative: two 95% intervals
   that just touch correspond to p ~ 0.006 for the difference). Proposals that
   fail are removed one at a time, weakest first, and the neighbours are
   re-evaluated on the merged segments (the merge step of Hunter, Fleming et
   al. 2023, doi:10.1145/3578244.3583719).
5. ``min_segment`` = 3 by default: a segment's median must survive one odd
   run (with 2, one outlier on the newest night moves the median of the last
   segment and "confirms" a step at the wrong run). So a step in the newest
   runs is confirmed only once 3 runs sit after it; until then the same
   rule, applied to the newest 1-2 runs, reports it as a *suspected* change
   with the number of runs still needed.
6. Too few clean runs: status "insufficient_history" with how many more are
   needed; never a silent pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from harness.metrics.repetitions import MedianCI, RepeatResult, median_ci

MEDIAN_SE_FACTOR = math.sqrt(math.pi / 2)  # asymptotic se(median) / se(mean), normal data
DEFAULT_REL_THRESHOLD = 0.05


@dataclass
class Point:
    """One run's estimate for one benchmark key."""

    value: float
    ci_lo: float = float("nan")
    ci_hi: float = float("nan")
    contended: bool = False
    version: dict = field(default_factory=dict)
    run_id: str | None = None

    @classmethod
    def coerce(cls, p) -> Point:
        if isinstance(p, Point):
            return p
        if isinstance(p, dict):
            return cls(**{k: v for k, v in p.items() if k in cls.__dataclass_fields__})
        raise TypeError(f"not a Point or dict: {p!r}")


@dataclass
class Segment:
    start: int  # position among the clean points
    stop: int
    level: float  # median of the runs' values
    lo: float
    hi: float

    @property
    def n(self) -> int:
        return self.stop - self.start


@dataclass
class ChangePoint:
    index: int  # index in the input series of the first run at the new level
    run_id: str | None
    direction: str  # "regression" | "improvement"
    rel_change: float  # after / before - 1
    rel_ci: tuple[float, float]
    before: Segment
    after: Segment
    suspects: list[str]
    confirmed: bool = True
    runs_to_confirm: int = 0

    @property
    def suspects_text(self) -> str:
        return "; ".join(self.suspects) if self.suspects else "no version field changed"

    def describe(self) -> str:
        what = self.direction if self.confirmed else f"suspected {self.direction} " \
            f"(needs {self.runs_to_confirm} more run(s) to confirm)"
        return (f"{what} at run {self.run_id or self.index}: {self.rel_change:+.1%} "
                f"[{self.rel_ci[0]:+.1%}, {self.rel_ci[1]:+.1%}]; {self.suspects_text}")


@dataclass
class Analysis:
    status: str  # "ok" | "insufficient_history"
    message: str
    n_points: int
    n_used: int
    skipped: list[int]  # indexes of contended (or unusable) points
    needed: int = 0  # more clean runs needed before detection can run
    sigma_rel: float = float("nan")  # noise scale used, relative
    change_points: list[ChangePoint] = field(default_factory=list)  # confirmed, oldest first
    tail: ChangePoint | None = None  # suspected change in the newest runs
    newest_contended: bool = False  # the newest run was contended: tonight is not judged
    _n_clean: int = 0

    @property
    def newest(self) -> ChangePoint | None:
        return self.change_points[-1] if self.change_points else None

    def verdict(self, recent: int = 5) -> str:
        """What a nightly gate says today.

        "contended" (the newest run was disturbed: rerun it, it is not
        judged); "insufficient_history"; "suspected_regression" / "suspected_improvement"
        (the newest runs moved, not yet confirmable); "regression" /
        "improvement" when the newest confirmed change is among the last
        ``recent`` clean runs (a change is reported for a few nights, long
        enough to be seen; after that it is history and the next change is
        judged against the new level); otherwise "unchanged".
        """
        if self.newest_contended:
            return "contended"
        if self.status != "ok":
            return self.status
        if self.tail is not None:
            return f"suspected_{self.tail.direction}"
        cp = self.newest
        if cp is not None and cp.after.start >= self._n_clean - recent:
            return cp.direction
        return "unchanged"


def version_diff(a: dict, b: dict) -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if va == vb:
            continue
        if va is None or vb is None:
            out.append(f"{k} {'added' if va is None else 'removed'}")
        elif len(str(va)) > 20 or len(str(vb)) > 20:  # hashes: the values say nothing to a reader
            out.append(f"{k} changed")
        else:
            out.append(f"{k} {va} -> {vb}")
    return out


class _Model:
    """The log series, its noise scale and the segment/change-point rule."""

    def __init__(self, y: np.ndarray, sigma: float, z: float, rel_threshold: float, higher_is_better: bool):
        self.y, self.sigma, self.z = y, sigma, z
        self.thr, self.higher = rel_threshold, higher_is_better

    def se(self, m: int) -> float:
        return self.sigma / math.sqrt(m) * (MEDIAN_SE_FACTOR if m >= 3 else 1.0)

    def segment(self, a: int, b: int) -> Segment:
        c, h = float(np.median(self.y[a:b])), self.z * self.se(b - a)
        return Segment(a, b, math.exp(c), math.exp(c - h), math.exp(c + h))

    def test(self, a: int, cp: int, b: int) -> tuple[bool, float, Segment, Segment]:
        """(passes, strength, before, after) for a change at cp between [a,cp) and [cp,b)."""
        s1, s2 = self.segment(a, cp), self.segment(cp, b)
        d = math.log(s2.level / s1.level)
        gap = self.z * (self.se(s1.n) + self.se(s2.n))
        ok = abs(math.expm1(d)) >= self.thr and abs(d) > gap
        return ok, abs(d) / gap, s1, s2

    def change(self, cp_pos: int, s1: Segment, s2: Segment, pts, idx, confirmed=True, more=0) -> ChangePoint:
        d = math.log(s2.level / s1.level)
        h = self.z * math.hypot(self.se(s1.n), self.se(s2.n))
        worse = (d < 0) if self.higher else (d > 0)
        before, at = pts[idx[cp_pos - 1]], pts[idx[cp_pos]]
        return ChangePoint(idx[cp_pos], at.run_id, "regression" if worse else "improvement", math.expm1(d),
                           (math.expm1(d - h), math.expm1(d + h)), s1, s2,
                           version_diff(before.version, at.version), confirmed, more)


def _noise_scale(y: np.ndarray, pts: list[Point], z: float) -> float:
    d = np.diff(y)
    s_diff = 1.4826 * float(np.median(np.abs(d - np.median(d)))) / math.sqrt(2) if d.size else 0.0
    hw = [(math.log(p.ci_hi) - math.log(p.ci_lo)) / 2 for p in pts
          if p.ci_lo > 0 and math.isfinite(p.ci_lo) and math.isfinite(p.ci_hi) and p.ci_hi >= p.ci_lo]
    s_ci = float(np.median(hw)) / z if hw else 0.0
    return max(s_diff, s_ci, 1e-4)


def detect_changes(points, *, direction: str = "higher", rel_threshold: float = DEFAULT_REL_THRESHOLD,
                   confidence: float = 0.95, min_segment: int = 3, min_points: int = 6,
                   penalty_factor: float = 2.0) -> Analysis:
    """Change points over one benchmark key's runs (oldest first).

    ``points``: ``Point`` objects or dicts with value, ci_lo, ci_hi,
    contended, version, run_id. ``direction``: "higher" (throughput) or
    "lower" (latency) is better. Contended points are skipped (their indexes
    are in ``Analysis.skipped``), but their versions are not lost: suspects
    compare the last clean run before a change with the first after it, so a
    version that changed on a skipped run still shows.
    """
    if direction not in ("higher", "lower"):
        raise ValueError("direction must be 'higher' or 'lower'")
    min_points = max(min_points, 2 * min_segment)
    pts = [Point.coerce(p) for p in points]
    idx = [i for i, p in enumerate(pts)
           if not p.contended and p.value is not None and math.isfinite(p.value) and p.value > 0]
    used = set(idx)
    skipped = [i for i in range(len(pts)) if i not in used]
    n = len(idx)
    newest_contended = bool(pts) and (not idx or idx[-1] != len(pts) - 1)
    if n < min_points:
        need = min_points - n
        return Analysis("insufficient_history",
                        f"{n} clean run(s) ({len(skipped)} contended or unusable skipped); change-point "
                        f"detection needs {min_points}: {need} more run(s). Not judged: compare pairs "
                        f"with compare_runs until then.", len(pts), n, skipped, needed=need,
                        newest_contended=newest_contended, _n_clean=n)
    y = np.log([pts[i].value for i in idx])
    import ruptures as rpt  # with scipy.stats: 0.4 s that `import harness` (pytest start-up) need not pay
    from scipy import stats

    z = float(stats.norm.ppf(0.5 + confidence / 2))
    sigma = _noise_scale(y, [pts[i] for i in idx], z)
    model = _Model(y, sigma, z, rel_threshold, direction == "higher")

    bkps = rpt.Pelt(model="l2", min_size=min_segment, jump=1).fit(y.reshape(-1, 1)) \
        .predict(pen=penalty_factor * sigma ** 2 * math.log(n))
    cps = [b for b in bkps if b < n]
    while cps:
        bounds = [0, *cps, n]
        results = [model.test(bounds[k], bounds[k + 1], bounds[k + 2]) for k in range(len(cps))]
        failing = [(r[1], k) for k, r in enumerate(results) if not r[0]]
        if not failing:
            break
        del cps[min(failing)[1]]

    bounds = [0, *cps, n]
    found = []
    for k, cp in enumerate(cps):
        _, _, s1, s2 = model.test(bounds[k], cp, bounds[k + 2])
        found.append(model.change(cp, s1, s2, pts, idx))

    # The newest 1..min_segment-1 runs against the rest of the last segment;
    # of the tails that pass, the strongest places the step best (a step two
    # runs ago makes t=2 strongest, a one-night drop makes t=1 strongest).
    tail, best = None, 0.0
    last = cps[-1] if cps else 0
    for t in range(1, min_segment):
        cp = n - t
        if cp - last >= min_segment:
            ok, strength, s1, s2 = model.test(last, cp, n)
            if ok and strength > best:
                best = strength
                tail = model.change(cp, s1, s2, pts, idx, confirmed=False, more=min_segment - t)

    msg = f"{len(found)} change point(s) in {n} clean run(s)"
    if skipped:
        msg += f" ({len(skipped)} contended or unusable skipped)"
    if newest_contended:
        msg += "; the newest run was contended and is not judged: rerun it"
    if tail is not None:
        msg += f"; newest run(s) suggest a {tail.direction}, {tail.runs_to_confirm} more run(s) to confirm"
    return Analysis("ok", msg, len(pts), n, skipped, sigma_rel=math.expm1(sigma), change_points=found,
                    tail=tail, newest_contended=newest_contended, _n_clean=n)


# -- pairwise ------------------------------------------------------------------
@dataclass
class Comparison:
    verdict: str  # "regression" | "improvement" | "unchanged" | "contended"
    rel_change: float  # b / a - 1
    rel_ci: tuple[float, float]
    a: MedianCI
    b: MedianCI
    reason: str


def compare_runs(a_reps, b_reps, *, direction: str = "higher", rel_threshold: float = DEFAULT_REL_THRESHOLD,
                 confidence: float = 0.95) -> Comparison:
    """Is run B (candidate) different from run A (reference)?

    ``a_reps`` / ``b_reps``: repetition values, or ``RepeatResult``s. Uses the
    run-level intervals of the median (never per-iteration tests): a change
    counts when it is past ``rel_threshold`` and the two intervals do not
    overlap. The ratio's interval, [b.lo/a.hi, b.hi/a.lo] - 1, is the
    conservative one that matches that rule: it excludes 0 exactly when the
    intervals are apart. A contended run is not judged.
    """
    cont = []
    vals = []
    for name, r in (("A", a_reps), ("B", b_reps)):
        if isinstance(r, RepeatResult):
            if r.contended:
                cont.append(name)
            r = r.values
        vals.append(list(r))
    a, b = median_ci(vals[0], confidence), median_ci(vals[1], confidence)
    rel = b.median / a.median - 1
    lo = b.lo / a.hi - 1 if a.hi > 0 and math.isfinite(a.hi) else -math.inf
    hi = b.hi / a.lo - 1 if a.lo > 0 and math.isfinite(b.hi) else math.inf
    if cont:
        return Comparison("contended", rel, (lo, hi), a, b, f"run {' and '.join(cont)} contended: not judged")
    apart = b.hi < a.lo or b.lo > a.hi
    if not apart:
        return Comparison("unchanged", rel, (lo, hi), a, b, f"{rel:+.1%}: intervals overlap")
    if abs(rel) < rel_threshold:
        return Comparison("unchanged", rel, (lo, hi), a, b, f"{rel:+.1%}: below the {rel_threshold:.0%} threshold")
    worse = rel < 0 if direction == "higher" else rel > 0
    return Comparison("regression" if worse else "improvement", rel, (lo, hi), a, b,
                      f"{rel:+.1%} [{lo:+.1%}, {hi:+.1%}], past {rel_threshold:.0%} with intervals apart")
