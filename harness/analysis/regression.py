"""The history gate: is tonight's run worse than the runs before it?

Each candidate result is followed along its history: the earlier clean
results with the same benchmark key (what is measured) on the same machine
class, whatever version they measured (harness.results.identity). A new
export, new weights or a new runtime is what a nightly exists to judge; the
version fields that changed where the figure moved are reported as the
suspects.

- throughput / latency: the unit of evidence is a run's estimate with its
  within-run 95% interval over repetitions (harness.metrics.timing). The
  candidate is held against the pooled clean history of its key, every run a
  replicate, between-run spread included (harness.analysis.pooled): PASS only
  when the change interval's bad-side bound is inside the threshold,
  REGRESSION when it excludes 0 and the change is past the threshold,
  INCONCLUSIVE otherwise with the precision that would decide it. From 6
  clean runs, change points over the key's series (PELT from ``ruptures``:
  harness.analysis.changepoints) choose the segment the candidate is held
  against, and a recent change's later runs join the candidate. Per-iteration
  samples are never treated as independent evidence.
- top1 / top5: Fisher's exact test on the correct / wrong image counts.

A contended candidate (other processes busy while it was measured) is never
judged and never a reference: the gate says "inconclusive: contended", and
the gate exits INCONCLUSIVE unless something regressed. Interrupted,
still-running, failed or truncated results are never the reference. A gate
that compared nothing does not pass.
"""

from __future__ import annotations

import fnmatch
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field


from harness.analysis import claims as claims_mod
from harness.analysis.changepoints import Point, detect_changes, version_diff
from harness.analysis.pooled import Z95, RunEstimate, bad_bound, decide, needed, pooled_change, run_estimate
from harness.analysis.candidates import measured, per_key
from harness.analysis.comparability import comparable
from harness.analysis.gate_outcome import Comparison, GateOutcome, format_outcome  # noqa: F401 (re-exported)
from harness.analysis.thresholds import Thresholds
from harness.errors import ExitCode, UserError
from harness.results import Result
from harness.results.history import FIRST, History, run_order
from harness.results.identity import benchmark_key, machine_class, same_key, version_of
from harness.vocab import GATED_METRICS, METRICS

DEFAULT_METRICS = GATED_METRICS
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


def _estimate(r: Result, metric: str) -> RunEstimate:
    lo_k, hi_k = CI_KEYS.get(metric, (None, None))
    m = r.metrics
    return run_estimate(float(m[metric]), m.get(lo_k), m.get(hi_k), len(_reps(r, metric) or []),
                        m.get("ci_method"), r.run_id)


def _groups(hist: list[Result], cand: Result, metric: str, direction: str, rel: float, envs: dict):
    """(reference runs, candidate runs, change point or None, detection note). Below the
    runs change-point detection needs: every clean run is the reference. Above: the
    reference is the level the candidate is held against (the segment before a
    suspected or recently confirmed change, else the candidate's own segment) and a
    change's newer runs join the candidate as replicates."""
    series = [*hist, cand]
    an = detect_changes([point_of(r, metric, envs.get(r.run_id)) for r in series], direction=direction,
                        rel_threshold=rel)
    if an.status != "ok":
        return hist, [cand], None, f"change-point detection needs {an.needed} more clean run(s)"
    note = f"change points over {an.n_used} clean run(s) (PELT; noise {an.sigma_rel:.1%})"
    cps = [c.index for c in an.change_points]
    if an.tail is not None:
        cp, start = an.tail, an.tail.index
        seg0 = cps[-1] if cps else 0
    elif an.verdict() in ("regression", "improvement"):
        cp, start = an.newest, an.newest.index
        seg0 = cps[-2] if len(cps) > 1 else 0
    else:
        return series[(cps[-1] if cps else 0):-1], [cand], None, note
    return series[seg0:start], series[start:], cp, note


def _flags(r: Result) -> str:
    m = r.metrics
    f = [w for w, on in (("imprecise", m.get("precise") is False), ("unstable", bool(m.get("unstable")))) if on]
    return f" ({', '.join(f)})" if f else ""


def compare_series(hist: list[Result], cand: Result, metric: str, th: Thresholds, envs: dict,
                   extra: list[Result] | tuple = (), need_between: bool = True) -> Comparison | None:
    """`cand` against the history of its benchmark key (oldest first), or None
    when the metric was not measured on both sides. ``extra``: later runs of the
    same candidate (`gate --remeasure`), pooled with it as replicates."""
    if not isinstance(cand.metrics.get(metric), (int, float)):
        return None
    hist = [r for r in hist if isinstance(r.metrics.get(metric), (int, float))]
    extra = [r for r in extra if isinstance(r.metrics.get(metric), (int, float))]
    if not hist:
        return None
    direction = METRIC_DIRECTION[metric]
    higher = direction == "higher"
    t = th.resolve(metric, cand.model, cand.device)
    newest = extra[-1] if extra else cand
    common = dict(model=cand.model, case=cand.case, device=cand.device, metric=metric, direction=direction,
                  candidate_run=newest.run_id or "")
    if METRIC_STAGE[metric] == "accuracy":
        return _compare_accuracy(hist[-1], newest, metric, t, {**common, "candidate": float(newest.metrics[metric]),
                                                               "baseline_runs": [r.run_id for r in hist]}, envs)
    rel = t["rel"] if t["rel"] is not None else DEFAULT_REL
    thr = f"{100 * rel:g}%"
    ref, group, cp, detection = _groups(hist, cand, metric, direction, rel, envs)
    group = [*group, *extra]
    common["baseline_runs"] = [r.run_id for r in ref]
    est_ref = [e for e in (_estimate(r, metric) for r in ref) if math.isfinite(e.se)]
    est_c = [_estimate(r, metric) for r in group]
    if not est_ref or not all(math.isfinite(e.se) for e in est_c):
        side = "either side" if not est_ref and not all(math.isfinite(e.se) for e in est_c) else \
            ("the reference side" if not est_ref else "the candidate side")
        base = float(ref[-1].metrics[metric])
        c = float(newest.metrics[metric])
        return Comparison(**common, candidate=c, baseline=base, change=c / base - 1 if base else 0.0, threshold=thr,
                          test=f"none: no run-level interval on {side} ({detection})", p_value=None,
                          verdict="inconclusive",
                          reason=f"{metric} {base:.4g} -> {c:.4g}: not judged, no run-level interval on {side} "
                                 f"(results stored before repetitions, or a single repetition)")
    ch = pooled_change(est_ref, est_c)
    v = decide(ch, rel, higher, need_between=need_between)
    bb = bad_bound(ch, higher)
    lim = f"{-rel:+.0%}" if higher else f"{rel:+.0%}"
    shown = (f"{ch.ref_level:.4g} -> {ch.cand_level:.4g} ({ch.rel:+.1%}, 95% CI {ch.lo:+.1%} to {ch.hi:+.1%}; "
             f"bad-side bound {bb:+.1%})")
    if cp is not None:
        suspects = list(cp.suspects)
        where = f"from run {cp.run_id}" + ("" if cp.confirmed else " (the newest run(s); rerun to confirm)")
    else:
        suspects = _suspects(version_of(ref[-1], envs.get(ref[-1].run_id)),
                             version_of(newest, envs.get(newest.run_id)))
        where = ""
    need = needed(ch, rel, higher) if v == "inconclusive" else None
    if v == "regression":
        why = (f"past {thr} with the interval excluding 0 {where}".rstrip() +
               f"; suspects: {'; '.join(suspects) or 'no version field changed'}")
    elif v == "improvement":
        why = f"better by more than {thr} with the interval excluding 0 {where}".rstrip()
    elif v == "unchanged":
        why = f"bad-side bound inside {lim}: pass"
    else:
        why = need.text if ch.within_only else \
            f"neither within {lim} nor a change past {thr} that excludes 0: {need.text}"
    between = (f"between-run sd {ch.tau:.1%} ({ch.tau_df} df)" if not ch.within_only else
               "between-run spread unknown (no two clean runs in a group): within-run intervals only")
    cal = math.expm1(Z95 * math.sqrt((0.0 if ch.within_only else ch.tau ** 2) + est_c[-1].se ** 2))
    within = math.expm1(Z95 * est_c[-1].se)
    cand_txt = (f"candidate {ch.n_cand} run(s){_flags(newest)}: ±{within:.1%} within run, ±{cal:.1%} with the "
                f"between-run spread")
    test = (f"pooled interval: {ch.n_cand} candidate run(s) against the mean of {ch.n_ref} clean run(s), "
            f"run-level replicates, {between}, t({ch.df:.0f}) ({detection})")
    moved = v in ("regression", "improvement")
    return Comparison(**common, candidate=ch.cand_level, baseline=ch.ref_level, change=ch.rel, threshold=thr,
                      test=test, p_value=None, verdict=v,
                      reason=f"{metric} {shown}: {why} [{cand_txt}; reference {ch.n_ref} run(s), {between}"
                             f"{'; ' + detection if cp is None and 'needs' in detection else ''}]",
                      change_ci=[ch.lo, ch.hi], bad_bound=bb, need=need.text if need else "",
                      change_run=(cp.run_id if cp is not None else newest.run_id) if moved else None,
                      suspects=suspects if moved else [], calibrated_halfwidth=cal,
                      notice=_notice(cand, metric, ch.rel, th, rel, thr, shown) if v == "improvement" else "")


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
             models: list[str] | None = None, devices: list[str] | None = None,
             remeasured: dict[str, str] | None = None) -> GateOutcome:
    """Hold the candidates against the history of their benchmark keys.

    candidate_runs: default, per key and host, the newest run that measured the
    key there. baseline_runs: pin the reference (e.g. `compare A B`); default,
    for each key, the newest `depth` clean runs before the candidate's, on the
    same machine class. remeasured: {remeasure run id: the candidate run it
    remeasured}: their results join that candidate as replicates.
    """
    th = thresholds or Thresholds()
    remeasured = dict(remeasured or {})
    for m in metrics:
        if m not in METRIC_STAGE:
            raise UserError(f"unknown metric {m!r} for the gate", fix=f"use some of: {', '.join(METRIC_STAGE)}")
    runs = history.runs
    envs = {rid: (run.get("env") or {}) for rid, run in runs.items()}
    classes = history.machine_classes
    gated_stages = {METRIC_STAGE[m] for m in metrics}

    def wanted(r: Result) -> bool:
        return (not models or r.model in models) and (not devices or any(fnmatch.fnmatchcase(r.device, d)
                                                                         for d in devices))

    stale: list[str] = []
    if candidate_runs is None:
        picked, stale = per_key(history, wanted, gated_stages, remeasured)
        cands = sorted({r.run_id for r, _ in picked}, key=lambda rid: run_order(runs[rid]))
        cand_results = [r for r, _ in picked]
        extras_of = {id(r): ex for r, ex in picked}
    else:
        cands = list(candidate_runs)
        cand_results = [r for r in history.run_results(cands) if wanted(r)]
        extras_of = {id(r): sorted((x for x in history.results if remeasured.get(x.run_id) == r.run_id
                                    and (x.model, x.case) == (r.model, r.case) and measured(x, gated_stages)),
                                   key=lambda x: run_order(runs[x.run_id])) for r in cand_results}
    notes = []
    for rid in cands:
        st = (runs.get(rid) or {}).get("status")
        if st != "finished":
            notes.append(f"candidate run {rid} is {st}: its results are compared, but it will never be a baseline")
    skip_ids = set(cands) | set(remeasured)
    last = max((run_order(runs[rid]) for rid in cands if rid in runs), default=FIRST)
    if baseline_runs is not None:
        pool = [r for r in history.run_results(baseline_runs) if wanted(r)]
        for rid in baseline_runs:
            if runs.get(rid, {}).get("status") != "finished":
                raise UserError(f"run {rid} is {runs.get(rid, {}).get('status')}: an interrupted or unfinished "
                                f"run is never used as the baseline", fix="pick a run that finished")
    else:
        pool = [r for r in history.results if r.run_id not in skip_ids and wanted(r)
                and r.run_id in runs and run_order(runs[r.run_id]) < last]
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
    comparisons, missing_base, inconclusive, seen, contended_keys = [], [], [], set(), []
    stale_keys = {tuple(x.split(":", 1)[0].split(" ", 1)) for x in stale}
    for cand in cand_results:
        if cand.stage not in gated_stages or cand.status not in ("passed", "failed"):
            continue  # skipped / errored: reported as missing below when history had it
        seen.add((cand.model, cand.case))
        group = [x for x in [cand, *extras_of.get(id(cand), [])] if not x.metrics.get("contended")]
        if not group:
            cont = [cand, *extras_of.get(id(cand), [])][-1]
            inconclusive.append(f"{cand.model} {cand.case}: inconclusive: contended (other processes used the "
                                f"machine in {cont.metrics.get('n_contended')} of "
                                f"{len(cont.metrics.get('repetitions') or [])} repetitions): not judged; rerun it "
                                f"(harness gate --remeasure)")
            contended_keys.append((cand.run_id, cand.model, cand.case))
            continue
        key, mclass = benchmark_key(cand), classes.get(cand.run_id) or machine_class(None)
        start = run_order(runs[cand.run_id]) if cand.run_id in runs else last
        older = [r for r in by_case.get((cand.model, cand.case), [])
                 if baseline_runs is not None or run_order(runs[r.run_id]) < start]
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
                c = compare_series(hist, group[0], m, th, envs, extra=group[1:],
                                   need_between=baseline_runs is None)
                if c is not None:
                    c.stale = (cand.model, cand.case) in stale_keys
                    comparisons.append(c)
    missing_cand = list(stale)
    cand_status = {(r.model, r.case): r for r in cand_results}
    for case, rs in by_case.items():
        if case in seen or rs[-1].stage not in gated_stages:
            continue
        got = cand_status.get(case)
        why = f"{got.status}: {got.reason}" if got else "not run"
        missing_cand.append(f"{case[0]} {case[1]}: {why}")
    return GateOutcome(comparisons, sorted(missing_base), sorted(set(missing_cand)), list(cands), notes,
                       inconclusive=inconclusive, contended_keys=contended_keys)


def evaluate_claims(history: History, run_ids: list[str], baselines) -> tuple[list, str | None]:
    """Measured claim verdicts for the given runs; (verdicts, note)."""
    if baselines is None or not getattr(baselines, "claims", None):
        return [], None
    devices = {r.device for r in history.results if r.status in ("passed", "failed")}
    return list(claims_mod.evaluate_claims(history.run_results(run_ids), baselines.claims, devices)), None
