"""The history gate: is tonight's run worse than the runs before it?

Each candidate result is followed along its history: the earlier clean
results with the same benchmark key (what is measured) on the same machine
class, whatever version they measured (harness.results.identity). A new
export, new weights or a new runtime is what a nightly exists to judge; the
version fields that changed where the figure moved are reported as the
suspects.

- throughput / latency: the unit of evidence is a run's estimate with its
  95% interval over repetitions (harness.metrics.timing). Change points are
  found over the key's series of per-run estimates (PELT from ``ruptures``,
  kept only when past the threshold AND the intervals before and after are
  apart: harness.analysis.changepoints). Until a series holds enough clean
  runs for that, the candidate is held against the previous run by their
  run-level intervals, and the gate says how many more runs detection needs.
  Per-iteration samples are never treated as independent evidence.
- top1 / top5: Fisher's exact test on the correct / wrong image counts.

A contended candidate (other processes busy while it was measured) is never
judged and never a reference: the gate says "inconclusive: contended", and
when every candidate is contended it exits with its own code. Interrupted,
still-running, failed or truncated results are never the reference. A gate
that compared nothing does not pass.
"""

from __future__ import annotations

import fnmatch
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field


from harness.analysis import claims as claims_mod
from harness.analysis.changepoints import (
    Point,
    compare_runs,
    detect_changes,
    version_diff,
)
from harness.analysis.comparability import comparable
from harness.analysis.thresholds import Thresholds
from harness.errors import ExitCode, UserError
from harness.results import Result
from harness.results.history import History, run_order
from harness.results.identity import benchmark_key, machine_class, same_key, version_of
from harness.vocab import GATED_METRICS, METRICS

DEFAULT_METRICS = GATED_METRICS
EXIT_PASS, EXIT_REGRESSION, EXIT_NOTHING_COMPARED = ExitCode.OK, ExitCode.FAILED, ExitCode.NOTHING_COMPARED
METRIC_DIRECTION = {k: m.direction for k, m in METRICS.items() if m.stage in ("throughput", "accuracy")}
METRIC_STAGE = {k: m.stage for k, m in METRICS.items() if m.stage in ("throughput", "accuracy")}
# the stored interval of a metric: (low, high) keys in Result.metrics
CI_KEYS = {"throughput_ips": ("throughput_ci_lo", "throughput_ci_hi"),
           "latency_ms_p50": ("latency_ms_p50_ci_lo", "latency_ms_p50_ci_hi")}
# per-repetition value of a metric in Result.metrics["repetitions"]
REP_KEYS = {"throughput_ips": "throughput_ips", "latency_ms_p50": "latency_ms_p50"}
DEFAULT_REL = 0.05

# Newest clean runs of a key the change-point detection looks at.
DEFAULT_HISTORY = 30


# -- comparing ----------------------------------------------------------------
@dataclass
class Comparison:
    model: str
    case: str
    device: str
    metric: str
    direction: str
    baseline: float  # the reference level: the segment before the change, or the previous run
    candidate: float
    change: float  # relative change, candidate / baseline - 1 (signed as measured)
    threshold: str
    test: str
    p_value: float | None
    verdict: str  # regression | improvement | unchanged
    reason: str
    notice: str = ""
    baseline_runs: list[str] = field(default_factory=list)
    candidate_run: str = ""
    change_ci: list[float] | None = None  # 95% interval of the relative change
    change_run: str | None = None  # the run where the level changed
    suspects: list[str] = field(default_factory=list)  # version fields that changed there

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GateOutcome:
    comparisons: list[Comparison]
    missing_baseline: list[str]
    missing_candidate: list[str]
    candidate_runs: list[str]
    notes: list[str] = field(default_factory=list)
    claims: list = field(default_factory=list)
    inconclusive: list[str] = field(default_factory=list)  # contended candidates: not judged

    @property
    def regressions(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.verdict == "regression"]

    @property
    def failed_claims(self) -> list:
        return [c for c in self.claims if getattr(c, "origin", "measured") == "measured" and c.verdict == "fail"]

    @property
    def exit_code(self) -> int:
        if self.regressions or self.failed_claims:
            return EXIT_REGRESSION
        if not self.comparisons:
            return ExitCode.INCONCLUSIVE if self.inconclusive else EXIT_NOTHING_COMPARED
        return EXIT_PASS

    @property
    def verdict(self) -> str:
        return {EXIT_PASS: "pass", EXIT_REGRESSION: "fail", EXIT_NOTHING_COMPARED: "fail",
                ExitCode.INCONCLUSIVE: "inconclusive"}[self.exit_code]


def _fisher(metric: str, base: Result, cand: Result) -> tuple[str, float | None]:
    b, c = base.metrics, cand.metrics
    if not (b.get("num_images") and c.get("num_images")):
        return "none (image counts not stored)", None
    nb, nc = int(b["num_images"]), int(c["num_images"])
    kb, kc = round(b[metric] * nb / 100), round(c[metric] * nc / 100)
    from scipy import stats  # 0.3 s of start-up, for accuracy comparisons only

    return "fisher", float(stats.fisher_exact([[kb, nb - kb], [kc, nc - kc]]).pvalue)


def point_of(r: Result, metric: str, env: dict | None, version: dict | None = None) -> Point:
    """One run's estimate of `metric` for change-point detection (the report draws the same points).
    ``version``: ``version_of(r, env)`` where the caller has it already."""
    lo_k, hi_k = CI_KEYS.get(metric, (None, None))
    lo, hi = r.metrics.get(lo_k, math.nan), r.metrics.get(hi_k, math.nan)
    return Point(float(r.metrics[metric]), float(lo) if lo is not None else math.nan,
                 float(hi) if hi is not None else math.nan, bool(r.metrics.get("contended")),
                 version if version is not None else version_of(r, env), r.run_id)


def _reps(r: Result, metric: str) -> list[float] | None:
    reps = r.metrics.get("repetitions")
    key = REP_KEYS.get(metric)
    if not reps or key is None:
        return None
    vals = [x[key] for x in reps if x.get("used", x.get("kept", True)) and isinstance(x.get(key), (int, float))]
    return vals or None


def _suspects(before: dict, after: dict) -> list[str]:
    return version_diff(before, after)


def _notice(cand: Result, metric: str, change: float, th: Thresholds, rel: float, thr: str, shown: str) -> str:
    if abs(change) < th.notice_factor * rel:
        return ""
    return (f"{cand.model} {cand.case} {metric} improved {shown}, over {th.notice_factor:g}x the {thr} "
            f"threshold: if this is intended, update the reference (baselines.yaml or the pinned baseline run)")


def compare_series(hist: list[Result], cand: Result, metric: str, th: Thresholds, envs: dict) -> Comparison | None:
    """`cand` against the history of its benchmark key (oldest first), or None
    when the metric was not measured on both sides."""
    if not isinstance(cand.metrics.get(metric), (int, float)):
        return None
    hist = [r for r in hist if isinstance(r.metrics.get(metric), (int, float))]
    if not hist:
        return None
    direction = METRIC_DIRECTION[metric]
    t = th.resolve(metric, cand.model, cand.device)
    c = float(cand.metrics[metric])
    common = dict(model=cand.model, case=cand.case, device=cand.device, metric=metric, direction=direction,
                  candidate=c, candidate_run=cand.run_id or "", baseline_runs=[r.run_id for r in hist])
    if METRIC_STAGE[metric] == "accuracy":
        return _compare_accuracy(hist[-1], cand, metric, t, common, envs)
    rel = t["rel"] if t["rel"] is not None else DEFAULT_REL
    thr = f"{100 * rel:g}%"
    points = [point_of(r, metric, envs.get(r.run_id)) for r in [*hist, cand]]
    analysis = detect_changes(points, direction=direction, rel_threshold=rel)
    verdict = analysis.verdict()
    if verdict == "insufficient_history":
        prev = hist[-1]
        a, b = _reps(prev, metric), _reps(cand, metric)
        more = f"change-point detection needs {analysis.needed} more clean run(s)"
        suspects = _suspects(version_of(prev, envs.get(prev.run_id)), version_of(cand, envs.get(cand.run_id)))
        base = float(prev.metrics[metric])
        if a and b:
            cmp_ = compare_runs(a, b, direction=direction, rel_threshold=rel)
            v = cmp_.verdict if cmp_.verdict in ("regression", "improvement") else "unchanged"
            shown = f"{base:.4g} -> {c:.4g} ({cmp_.rel_change:+.1%}, 95% CI {cmp_.rel_ci[0]:+.1%} to " \
                    f"{cmp_.rel_ci[1]:+.1%})"
            if v == "unchanged":
                why = "intervals overlap" if "overlap" in cmp_.reason else f"within {thr}"
            else:
                why = (f"past {thr} with the run-level intervals apart, against the previous run ({more}); "
                       f"suspects: {'; '.join(suspects) or 'no version field changed'}")
            return Comparison(**common, baseline=base, change=cmp_.rel_change, threshold=thr,
                              test=f"run-level intervals vs the previous run ({more})", p_value=None, verdict=v,
                              reason=f"{metric} {shown}: {why}", change_ci=list(cmp_.rel_ci),
                              change_run=cand.run_id if v != "unchanged" else None,
                              suspects=suspects if v != "unchanged" else [],
                              notice=_notice(cand, metric, cmp_.rel_change, th, rel, thr, shown)
                              if v == "improvement" else "")
        change = c / base - 1 if base else 0.0
        return Comparison(**common, baseline=base, change=change, threshold=thr,
                          test=f"none: no repetitions stored on {'both sides' if not (a or b) else 'one side'} "
                               f"({more})", p_value=None, verdict="unchanged",
                          reason=f"{metric} {base:.4g} -> {c:.4g} ({change:+.1%}): not judged, results stored "
                                 f"before repetitions carry no run-level interval")
    cp = analysis.tail if verdict.startswith("suspected_") else analysis.newest
    test = f"change points over {analysis.n_used} clean run(s) (PELT; noise {analysis.sigma_rel:.1%})"
    if cp is None or verdict == "unchanged":
        seg_level = float(points[-1].value)
        if analysis.change_points:
            seg_level = analysis.change_points[-1].after.level
        change = c / seg_level - 1 if seg_level else 0.0
        return Comparison(**common, baseline=seg_level, change=change, threshold=thr, test=test, p_value=None,
                          verdict="unchanged", reason=f"{metric} {c:.4g}: no change past {thr} with intervals "
                          f"apart ({analysis.message})")
    v = cp.direction
    shown = (f"{cp.before.level:.4g} -> {cp.after.level:.4g} ({cp.rel_change:+.1%}, 95% CI "
             f"{cp.rel_ci[0]:+.1%} to {cp.rel_ci[1]:+.1%})")
    where = "the newest run(s); rerun to confirm" if not cp.confirmed else f"run {cp.run_id}"
    reason = f"{metric} {shown} from {where}; suspects: {cp.suspects_text}"
    return Comparison(**common, baseline=cp.before.level, change=cp.rel_change, threshold=thr, test=test,
                      p_value=None, verdict=v, reason=reason, change_ci=list(cp.rel_ci), change_run=cp.run_id,
                      suspects=list(cp.suspects),
                      notice=_notice(cand, metric, cp.rel_change, th, rel, thr, shown) if v == "improvement" else "")


def _compare_accuracy(base: Result, cand: Result, metric: str, t: dict, common: dict, envs: dict) -> Comparison:
    b, c = float(base.metrics[metric]), common["candidate"]
    diff = c - b
    change = diff / b if b else 0.0
    if t["abs"] is not None:
        past, thr = abs(diff) > t["abs"], f"{t['abs']:g}"
    elif t["rel"] is not None:
        past, thr = abs(change) > t["rel"], f"{100 * t['rel']:g}%"
    else:
        past, thr = False, "none configured"
    test, p = _fisher(metric, base, cand)
    significant = p is not None and p < t["alpha"]
    worse = diff < 0 if common["direction"] == "higher" else diff > 0
    shown = f"{b:.4g} -> {c:.4g} ({diff:+.3g} points)"
    sig = f"{test} p={p:.2g}" if p is not None else test
    verdict = ("regression" if worse else "improvement") if past and significant else "unchanged"
    suspects = _suspects(version_of(base, envs.get(base.run_id)), version_of(cand, envs.get(cand.run_id)))
    reason = (f"{metric} {shown}: {'past' if past else 'within'} {thr}, "
              f"{'significant' if significant else 'not significant'} ({sig})")
    if verdict != "unchanged":
        reason += f"; suspects: {'; '.join(suspects) or 'no version field changed'}"
    return Comparison(**{**common, "baseline_runs": [base.run_id]}, baseline=b, change=change, threshold=thr,
                      test=test, p_value=p, verdict=verdict, reason=reason,
                      change_run=cand.run_id if verdict != "unchanged" else None,
                      suspects=suspects if verdict != "unchanged" else [])


def _clean(r: Result, runs: dict) -> bool:
    return (r.status == "passed" and (runs.get(r.run_id) or {}).get("status") == "finished"
            and not r.metrics.get("truncated") and not r.metrics.get("contended"))


def _why_not(cand: Result, older: Result, envs: dict) -> str:
    ka, kb = benchmark_key(cand), benchmark_key(older)
    diff = [f"{k} {kb.get(k)} -> {ka.get(k)}" for k in ka if not same_key({k: ka[k]}, {k: kb.get(k)})]
    if diff:
        return "benchmark key differs from the newest clean result: " + ", ".join(diff)
    return (f"measured on another machine class ({machine_class(envs.get(older.run_id))} -> "
            f"{machine_class(envs.get(cand.run_id))}): figures of different machines are never compared")


def evaluate(history: History, *, candidate_runs: list[str] | None = None, baseline_runs: list[str] | None = None,
             metrics=DEFAULT_METRICS, thresholds: Thresholds | None = None, depth: int = DEFAULT_HISTORY,
             models: list[str] | None = None, devices: list[str] | None = None) -> GateOutcome:
    """Hold the candidate runs' results against the history of their benchmark keys.

    candidate_runs: default the newest run of each host. baseline_runs: pin
    the reference (e.g. `compare A B`); default, for each key, the newest
    `depth` clean runs that started before the candidate, on the same machine class.
    """
    th = thresholds or Thresholds()
    for m in metrics:
        if m not in METRIC_STAGE:
            raise UserError(f"unknown metric {m!r} for the gate", fix=f"use some of: {', '.join(METRIC_STAGE)}")
    runs = history.runs
    envs = {rid: (run.get("env") or {}) for rid, run in runs.items()}
    classes = history.machine_classes
    cands = candidate_runs or history.newest_per_host()
    notes = []
    for rid in cands:
        st = (runs.get(rid) or {}).get("status")
        if st != "finished":
            notes.append(f"candidate run {rid} is {st}: its results are compared, but it will never be a baseline")

    def wanted(r: Result) -> bool:
        return (not models or r.model in models) and (not devices or any(fnmatch.fnmatchcase(r.device, d)
                                                                         for d in devices))

    cand_results = [r for r in history.run_results(cands) if wanted(r)]
    start = min((run_order(runs[rid]) for rid in cands if rid in runs), default=("", 0))
    if baseline_runs is not None:
        pool = [r for r in history.run_results(baseline_runs) if wanted(r)]
        for rid in baseline_runs:
            if runs.get(rid, {}).get("status") != "finished":
                raise UserError(f"run {rid} is {runs.get(rid, {}).get('status')}: an interrupted or unfinished "
                                f"run is never used as the baseline", fix="pick a run that finished")
    else:
        pool = [r for r in history.results if r.run_id not in set(cands) and wanted(r)
                and r.run_id in runs and run_order(runs[r.run_id]) < start]
    excluded = sorted({r.run_id for r in pool if runs.get(r.run_id, {}).get("status") != "finished"})
    if excluded:
        notes.append(f"not used as baseline (interrupted or unfinished): {', '.join(excluded)}")
    contended_refs = sorted({r.run_id for r in pool if r.metrics.get("contended")})
    if contended_refs:
        notes.append(f"contended results are never a reference: skipped in {', '.join(contended_refs)}")
    by_case: dict[tuple, list[Result]] = defaultdict(list)
    for r in sorted(pool, key=lambda r: (run_order(runs.get(r.run_id, {})), r.created_at)):
        if _clean(r, runs):
            by_case[(r.model, r.case)].append(r)
    gated_stages = {METRIC_STAGE[m] for m in metrics}
    comparisons, missing_base, inconclusive, seen = [], [], [], set()
    for cand in cand_results:
        if cand.stage not in gated_stages or cand.status not in ("passed", "failed"):
            continue  # skipped / errored: reported as missing below when history had it
        seen.add((cand.model, cand.case))
        if cand.metrics.get("contended"):
            inconclusive.append(f"{cand.model} {cand.case}: inconclusive: contended (other processes used the "
                                f"machine in {cand.metrics.get('n_contended')} of "
                                f"{len(cand.metrics.get('repetitions') or [])} repetitions): not judged; rerun it")
            continue
        key, mclass = benchmark_key(cand), classes.get(cand.run_id) or machine_class(None)
        older = by_case.get((cand.model, cand.case), [])
        # CPU figures of N parallel workers (pytest-xdist) meet only figures of N workers
        workers = history.cpu_workers(cand)
        hist = [r for r in older if same_key(key, benchmark_key(r)) and history.cpu_workers(r) == workers
                and (classes.get(r.run_id) or machine_class(None)) == mclass][-depth:]
        if not hist:
            why = _why_not(cand, older[-1], envs) if older else "no clean earlier result"
            if older and all(history.cpu_workers(r) != workers for r in older):
                why = (f"measured by {workers} worker(s) sharing the CPU; history has only "
                       f"{history.cpu_workers(older[-1])}-worker figures: not comparable")
            missing_base.append(f"{cand.model} {cand.case}: {why}")
            continue
        # The one comparability rule (harness.analysis.comparability), less the
        # model artifact: following a key across artifacts and runtimes is the
        # gate's job, and a changed artifact is reported as a suspect instead.
        ok, why = comparable(hist[-1], cand, ignore=("model_artifact",))
        if not ok:
            missing_base.append(f"{cand.model} {cand.case}: not comparable with history: {why}")
            continue
        for m in metrics:
            if METRIC_STAGE[m] == cand.stage:
                c = compare_series(hist, cand, m, th, envs)
                if c is not None:
                    comparisons.append(c)
    missing_cand = []
    cand_status = {(r.model, r.case): r for r in cand_results}
    for case, rs in by_case.items():
        if case in seen or rs[-1].stage not in gated_stages:
            continue
        got = cand_status.get(case)
        why = f"{got.status}: {got.reason}" if got else "not run"
        missing_cand.append(f"{case[0]} {case[1]}: {why}")
    return GateOutcome(comparisons, sorted(missing_base), sorted(set(missing_cand)), list(cands), notes,
                       inconclusive=inconclusive)


def evaluate_claims(history: History, run_ids: list[str], baselines) -> tuple[list, str | None]:
    """Measured claim verdicts for the given runs; (verdicts, note)."""
    if baselines is None or not getattr(baselines, "claims", None):
        return [], None
    return list(claims_mod.evaluate_claims(history.run_results(run_ids), baselines.claims)), None


# -- text output --------------------------------------------------------------
def format_outcome(out: GateOutcome, *, verbose: bool = False, subject: str = "GATE") -> str:
    """The outcome as text; the verdict line names ``subject`` ("GATE", or "COMPARISON" for `harness compare`)."""
    lines = []
    n = len({(c.model, c.case) for c in out.comparisons}) + len(out.missing_baseline) + len(out.inconclusive)
    compared = len({(c.model, c.case) for c in out.comparisons})
    lines.append(f"compared {compared} of {n} candidate case(s) from run(s) {', '.join(out.candidate_runs) or 'none'}"
                 f" ({len(out.comparisons)} metric comparisons)")
    for c in out.comparisons:
        if verbose or c.verdict != "unchanged":
            lines.append(f"  {c.verdict.upper():11} {c.model} {c.case}: {c.reason}")
            if verbose:
                lines.append(f"              test: {c.test}")
    for x in out.inconclusive:
        lines.append(f"  INCONCLUSIVE {x}")
    for c in out.claims:
        if verbose or c.verdict != "pass":
            lines.append(f"  CLAIM {c.verdict.upper():8} {c.claim_id} ({c.origin}): {c.reason}")
    if out.missing_baseline:
        lines.append(f"missing on the baseline side ({len(out.missing_baseline)}):")
        lines += [f"  {m}" for m in out.missing_baseline]
    if out.missing_candidate:
        lines.append(f"missing on the candidate side ({len(out.missing_candidate)}):")
        lines += [f"  {m}" for m in out.missing_candidate]
    lines += [f"note: {x}" for x in out.notes]
    lines += [f"notice: {c.notice}" for c in out.comparisons if c.notice]
    code = out.exit_code
    if code == ExitCode.INCONCLUSIVE:
        lines.append(f"{subject} INCONCLUSIVE: all {len(out.inconclusive)} candidate result(s) were contended: "
                     "nothing was judged; rerun on a quiet machine")
    elif code == EXIT_NOTHING_COMPARED:
        against = "history" if subject == "GATE" else "the reference run"
        lines.append(f"{subject} FAIL: 0 of {n} compared: nothing was held against {against} (see the lists above)")
    elif code == EXIT_REGRESSION:
        lines.append(f"{subject} FAIL: {len(out.regressions)} regression(s), {len(out.failed_claims)} failed claim(s)")
    else:
        extra = f"; {len(out.inconclusive)} contended result(s) not judged" if out.inconclusive else ""
        lines.append(f"{subject} PASS: no regression in {len(out.comparisons)} comparison(s){extra}")
    return "\n".join(lines)
