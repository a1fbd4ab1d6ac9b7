"""The history gate: is tonight's run worse than the runs before it?

Each gated metric knows its direction (throughput down, latency up, accuracy
down is worse). A change counts only when it is past its threshold *and*
statistically significant:

- throughput / latency: Mann-Whitney U on the per-iteration latencies
  (``Timing.latencies_ms``; the rank test suits skewed, heavy-tailed timing
  samples, and asv flags changes the same way). Results stored before the
  raw samples were kept fall back to Welch's t-test on the stored summary
  (latency mean, std, iterations) via ``scipy.stats.ttest_ind_from_stats``.
- top1 / top5: Fisher's exact test on the correct / wrong image counts.

Only results with the same identity (artifact, preprocessing, runner and
version, device, batch, precision, timing scope) are compared. Baselines come
only from runs that finished cleanly and from results that passed: an
interrupted, still-running or failed result never becomes the reference. A
gate that compared nothing does not pass.
"""

from __future__ import annotations

import fnmatch
import math
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, field

from harness.analysis import claims as claims_mod
from harness.analysis.thresholds import Thresholds
from harness.errors import ExitCode, UserError
from harness.results import IDENTITY_FIELDS, Result
from harness.results.history import History, run_order
from harness.vocab import GATED_METRICS, METRICS

DEFAULT_METRICS = GATED_METRICS
EXIT_PASS, EXIT_REGRESSION, EXIT_NOTHING_COMPARED = ExitCode.OK, ExitCode.FAILED, ExitCode.NOTHING_COMPARED
METRIC_DIRECTION = {k: m.direction for k, m in METRICS.items() if m.stage in ("throughput", "accuracy")}
METRIC_STAGE = {k: m.stage for k, m in METRICS.items() if m.stage in ("throughput", "accuracy")}

# Newest clean runs pooled as the reference for each identity.
DEFAULT_HISTORY = 5

# -- comparing ----------------------------------------------------------------
@dataclass
class Comparison:
    model: str
    case: str
    device: str
    metric: str
    direction: str
    baseline: float
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
            return EXIT_NOTHING_COMPARED
        return EXIT_PASS

    @property
    def verdict(self) -> str:
        return {EXIT_PASS: "pass", EXIT_REGRESSION: "fail", EXIT_NOTHING_COMPARED: "fail"}[self.exit_code]


def _samples(r: Result, metric: str):
    """Per-iteration samples in the metric's own unit, or None."""
    lat = r.metrics.get("latencies_ms")
    if not lat or metric not in METRIC_DIRECTION or METRIC_STAGE[metric] != "throughput":
        return None
    if metric == "throughput_ips":
        return [1000.0 * (r.batch_size or 1) / x for x in lat if x > 0]
    return list(lat)


def _test(metric: str, base: list[Result], cand: Result) -> tuple[str, float | None]:
    from scipy import stats

    if METRIC_STAGE[metric] == "accuracy":
        b, c = base[0].metrics, cand.metrics
        if not (b.get("num_images") and c.get("num_images")):
            return "none (image counts not stored)", None
        nb, nc = int(b["num_images"]), int(c["num_images"])
        kb, kc = round(b[metric] * nb / 100), round(c[metric] * nc / 100)
        return "fisher", float(stats.fisher_exact([[kb, nb - kb], [kc, nc - kc]]).pvalue)
    cs = _samples(cand, metric)
    bs = [x for r in base for x in (_samples(r, metric) or [])]
    if cs and bs and all(_samples(r, metric) for r in base):
        if len(set(cs) | set(bs)) == 1:
            return "mann-whitney", 1.0
        return "mann-whitney", float(stats.mannwhitneyu(bs, cs, alternative="two-sided").pvalue)
    b, c = base[0].metrics, cand.metrics
    need = ("latency_ms_mean", "latency_ms_std", "iterations")
    if all(isinstance(m.get(k), (int, float)) for m in (b, c) for k in need) and min(b["iterations"],
                                                                                       c["iterations"]) > 1:
        if b["latency_ms_std"] == 0 and c["latency_ms_std"] == 0:
            return "welch-t (summary)", 1.0 if b["latency_ms_mean"] == c["latency_ms_mean"] else 0.0
        p = stats.ttest_ind_from_stats(b["latency_ms_mean"], b["latency_ms_std"], b["iterations"],
                                       c["latency_ms_mean"], c["latency_ms_std"], c["iterations"],
                                       equal_var=False).pvalue
        return "welch-t (summary)", float(p)
    return "none (no samples stored)", None


def compare_results(base: list[Result], cand: Result, metric: str, th: Thresholds) -> Comparison | None:
    """`cand` against the pooled `base` results (same identity), or None when
    the metric was not measured on both sides."""
    vals = [r.metrics.get(metric) for r in base]
    if not all(isinstance(v, (int, float)) for v in vals) or not isinstance(cand.metrics.get(metric), (int, float)):
        return None
    direction = METRIC_DIRECTION[metric]
    b = statistics.median(vals)
    c = float(cand.metrics[metric])
    t = th.resolve(metric, cand.model, cand.device)
    diff = c - b
    change = diff / b if b else (0.0 if diff == 0 else math.inf)
    worse = diff < 0 if direction == "higher" else diff > 0
    if t["rel"] is not None:
        limit, past, thr = t["rel"], abs(change) > t["rel"], f"{100 * t['rel']:g}%"
    elif t["abs"] is not None:
        limit, past, thr = t["abs"], abs(diff) > t["abs"], f"{t['abs']:g}"
    else:
        limit, past, thr = None, False, "none configured"
    test, p = _test(metric, base, cand)
    significant = p is not None and p < t["alpha"]
    shown = f"{b:.4g} -> {c:.4g} ({100 * change:+.1f}%)"
    sig = f"{test} p={p:.2g}" if p is not None else test
    if past and significant:
        verdict = "regression" if worse else "improvement"
        reason = f"{metric} {shown}: {'worse' if worse else 'better'} past {thr}, significant ({sig} < {t['alpha']:g})"
    else:
        verdict = "unchanged"
        why = [f"within {thr}" if not past else f"past {thr}",
               "not significant" if not significant else "significant", f"({sig})"]
        reason = f"{metric} {shown}: " + ", ".join(why[:2]) + " " + why[2]
    notice = ""
    if verdict == "improvement" and limit:
        size = abs(change) if t["rel"] is not None else abs(diff)
        if size >= th.notice_factor * limit:
            notice = (f"{cand.model} {cand.case} {metric} improved {shown}, over {th.notice_factor:g}x the "
                      f"{thr} threshold: if this is intended, update the reference (baselines.yaml or the "
                      f"pinned baseline run)")
    return Comparison(cand.model, cand.case, cand.device, metric, direction, b, c, change, thr, test, p,
                      verdict, reason, notice, [r.run_id for r in base], cand.run_id or "")


def _clean(r: Result, runs: dict) -> bool:
    return (r.status == "passed" and (runs.get(r.run_id) or {}).get("status") == "finished"
            and not r.metrics.get("truncated"))


def _differs(a: Result, b: Result) -> str:
    d = [f"{k} {getattr(b, k)!s:.16} -> {getattr(a, k)!s:.16}" for k in IDENTITY_FIELDS if getattr(a, k) != getattr(b, k)]
    return ", ".join(d)


def evaluate(history: History, *, candidate_runs: list[str] | None = None, baseline_runs: list[str] | None = None,
             metrics=DEFAULT_METRICS, thresholds: Thresholds | None = None, depth: int = DEFAULT_HISTORY,
             models: list[str] | None = None, devices: list[str] | None = None) -> GateOutcome:
    """Compare the candidate runs' results with history.

    candidate_runs: default the newest run of each host. baseline_runs: pin
    the reference (e.g. `compare A B`); default, for each identity, the newest
    `depth` clean runs that started before the candidate.
    """
    th = thresholds or Thresholds()
    runs = history.runs
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
    by_identity: dict[str, list[Result]] = defaultdict(list)
    by_case: dict[tuple, Result] = {}
    def ident(r: Result) -> tuple:  # CPU figures of N parallel workers meet only figures of N workers
        return r.identity_key, history.cpu_workers(r)

    for r in sorted(pool, key=lambda r: (run_order(runs.get(r.run_id, {})), r.created_at)):
        if _clean(r, runs):
            by_identity[ident(r)].append(r)
            by_case[(r.model, r.case)] = r
    gated_stages = {METRIC_STAGE[m] for m in metrics}
    comparisons, missing_base, seen = [], [], set()
    for cand in cand_results:
        if cand.stage not in gated_stages:
            continue
        if cand.status not in ("passed", "failed"):
            continue  # skipped / errored: reported as missing below when history had it
        seen.add(ident(cand))
        base = by_identity.get(ident(cand), [])[-depth:]
        if not base:
            older = by_case.get((cand.model, cand.case))
            why = f"identity differs from the newest clean result: {_differs(cand, older)}" if older \
                else "no clean earlier result"
            if older and not _differs(cand, older):
                why = (f"measured by {history.cpu_workers(cand)} workers sharing the CPU; history has only "
                       f"{history.cpu_workers(older)}-worker figures: not comparable")
            missing_base.append(f"{cand.model} {cand.case}: {why}")
            continue
        for m in metrics:
            if METRIC_STAGE[m] == cand.stage:
                c = compare_results(base, cand, m, th)
                if c is not None:
                    comparisons.append(c)
    missing_cand = []
    cand_status = {(r.model, r.case): r for r in cand_results}
    for key, rs in by_identity.items():
        if key in seen or rs[-1].stage not in gated_stages:
            continue
        r = rs[-1]
        got = cand_status.get((r.model, r.case))
        why = (f"{got.status}: {got.reason}" if got and got.status not in ("passed", "failed")
               else "identity changed" if got else "not run")
        if not (got and got.status in ("passed", "failed")):
            missing_cand.append(f"{r.model} {r.case}: {why}")
    return GateOutcome(comparisons, sorted(missing_base), sorted(set(missing_cand)), list(cands), notes)


def evaluate_claims(history: History, run_ids: list[str], baselines) -> tuple[list, str | None]:
    """Measured claim verdicts for the given runs; (verdicts, note)."""
    if baselines is None or not getattr(baselines, "claims", None):
        return [], None
    return list(claims_mod.evaluate_claims(history.run_results(run_ids), baselines.claims)), None


# -- text output --------------------------------------------------------------
def format_outcome(out: GateOutcome, *, verbose: bool = False) -> str:
    lines = []
    n = len({(c.model, c.case) for c in out.comparisons}) + len(out.missing_baseline)
    compared = len({(c.model, c.case) for c in out.comparisons})
    lines.append(f"compared {compared} of {n} candidate case(s) from run(s) {', '.join(out.candidate_runs) or 'none'}"
                 f" ({len(out.comparisons)} metric comparisons)")
    for c in out.comparisons:
        if verbose or c.verdict != "unchanged":
            lines.append(f"  {c.verdict.upper():11} {c.model} {c.case}: {c.reason}")
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
    if code == EXIT_NOTHING_COMPARED:
        lines.append(f"GATE FAIL: 0 of {n} compared: nothing was held against history (see the lists above)")
    elif code == EXIT_REGRESSION:
        lines.append(f"GATE FAIL: {len(out.regressions)} regression(s), {len(out.failed_claims)} failed claim(s)")
    else:
        lines.append(f"GATE PASS: no significant regression in {len(out.comparisons)} comparison(s)")
    return "\n".join(lines)
