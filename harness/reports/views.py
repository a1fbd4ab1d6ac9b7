"""Report sections over history: gate verdicts, cross-device ratios, claims,
and each metric over runs.

Plain data for the template; every number is a stored measurement (or a
ratio of two stored measurements), formatted.
"""

from __future__ import annotations

import math
from collections import defaultdict

from harness.analysis import claims as claims_mod
from harness.analysis.changepoints import detect_changes
from harness.analysis.comparability import comparable
from harness.analysis.regression import CI_KEYS, DEFAULT_HISTORY, point_of
from harness.analysis.verdicts import verdicts_of
from harness.results import Result
from harness.results.history import run_order
from harness.results.identity import (
    benchmark_key,
    key_string,
    machine_class,
    version_of,
)
from harness.vocab import METRIC_DIRECTION, device_label

HISTORY_METRICS = (("throughput_ips", "images/s", ".2f"), ("latency_ms_p50", "ms p50", ".3g"),
                   ("top1", "top-1 %", ".3f"), ("top5", "top-5 %", ".3f"))
SPARK_W, SPARK_H = 220, 36
# newest runs of a series searched for change points: the gate's default history
CHANGE_WINDOW = DEFAULT_HISTORY


def sparkline(values: list[float], *, higher_is_better: bool, lows=None, highs=None, contended=None,
              changes=(), versions=()) -> str:
    """A small inline SVG of one benchmark key over runs: the estimates (line),
    their 95% intervals (vertical bars), contended runs (hollow), change
    points found by the gate (red dashed line before the run), and runs whose
    version under test changed (grey tick at the top).

    Drawn by hand rather than with matplotlib: a full report holds hundreds
    of them (3 models x 5 devices x 6 batches x 2 metrics), where one
    matplotlib figure each would take seconds and megabytes."""
    if not values:
        return ""
    n = len(values)
    lows = lows or [None] * n
    highs = highs or [None] * n
    contended = contended or [False] * n
    span_vals = [v for v in (*values, *(x for x in lows if x is not None), *(x for x in highs if x is not None))]
    lo, hi = min(span_vals), max(span_vals)
    span = (hi - lo) or 1.0

    def x_of(i):
        return 2 + (SPARK_W - 4) * (i / (n - 1) if n > 1 else 0.5)

    def y_of(v):
        return SPARK_H - 3 - (SPARK_H - 8) * (v - lo) / span

    pts = [(x_of(i), y_of(v)) for i, v in enumerate(values)]
    parts = [f'<svg class="spark" viewBox="0 0 {SPARK_W} {SPARK_H}" width="{SPARK_W}" height="{SPARK_H}" '
             f'role="img" aria-label="{n} runs">']
    for i in versions:
        parts.append(f'<line x1="{x_of(i):.1f}" y1="0" x2="{x_of(i):.1f}" y2="4" stroke="#888" stroke-width="1.5">'
                     f'<title>version changed at run {i + 1}</title></line>')
    for i in changes:
        x = (x_of(i - 1) + x_of(i)) / 2 if i > 0 else x_of(i)
        parts.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{SPARK_H}" stroke="#c62828" '
                     f'stroke-dasharray="3,2"><title>change point at run {i + 1}</title></line>')
    for i, (a, b) in enumerate(zip(lows, highs)):
        if a is not None and b is not None:
            parts.append(f'<line x1="{x_of(i):.1f}" y1="{y_of(a):.1f}" x2="{x_of(i):.1f}" y2="{y_of(b):.1f}" '
                         f'stroke="#9bb7d4" stroke-width="1.2"/>')
    poly = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
    parts.append(f'<polyline fill="none" stroke="#3572b0" stroke-width="1.5" points="{poly}"/>')
    for i, (x, y) in enumerate(pts):
        if contended[i]:
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.2" fill="white" stroke="#b35c00">'
                         f'<title>run {i + 1}: contended</title></circle>')
    best = max if higher_is_better else min
    bx, by = pts[values.index(best(values))]
    last_x, last_y = pts[-1]
    parts.append(f'<circle cx="{bx:.1f}" cy="{by:.1f}" r="2.2" fill="#2e7d32"/>'
                 f'<circle cx="{last_x:.1f}" cy="{last_y:.1f}" r="2.5" fill="#c62828"/></svg>')
    return "".join(parts)


def _ci(r: Result, metric: str) -> tuple:
    lo_k, hi_k = CI_KEYS.get(metric, (None, None))
    lo, hi = r.metrics.get(lo_k), r.metrics.get(hi_k)
    ok = all(isinstance(x, (int, float)) and math.isfinite(x) for x in (lo, hi))
    return (float(lo), float(hi)) if ok else (None, None)


def history_rows(model: str, history, run_label) -> list[dict]:
    """One row per benchmark key, machine class and metric: the metric over every
    run that measured it, across versions, with the gate's change points."""
    results, runs, classes = history.results, history.runs, history.machine_classes
    series = defaultdict(list)
    envs = {rid: (run.get("env") or {}) for rid, run in runs.items()}
    for r in results:
        if r.model != model or r.status not in ("passed", "failed"):
            continue
        key = None  # one per result, whatever the number of its metrics
        for metric, unit, spec in HISTORY_METRICS:
            v = r.metrics.get(metric)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                key = key or (key_string({**benchmark_key(r), "input_size": None}),
                              classes.get(r.run_id) or machine_class(None))
                series[(key, metric)].append(r)
    rows = []
    version: dict[int, dict] = {}  # per result: a result is in one series per metric
    for (key, metric), rs in series.items():
        rs.sort(key=lambda r: (run_order(runs.get(r.run_id, {})), r.created_at))
        unit, spec = next((u, s) for m, u, s in HISTORY_METRICS if m == metric)
        vals = [float(r.metrics[metric]) for r in rs]
        cis = [_ci(r, metric) for r in rs]
        cont = [bool(r.metrics.get("contended")) for r in rs]
        for r in rs:
            if id(r) not in version:
                version[id(r)] = version_of(r, envs.get(r.run_id))
        versions = [version[id(r)] for r in rs]
        changed = [i for i in range(1, len(rs)) if versions[i] != versions[i - 1]]
        last = rs[-1]
        clean = [r for r in rs if runs.get(r.run_id, {}).get("status") == "finished"]
        higher = METRIC_DIRECTION[metric] == "higher"
        change_idx, change_text = [], []
        if metric in CI_KEYS:
            points = [point_of(r, metric, envs.get(r.run_id), v) for r, v in zip(rs, versions)]
            # the window the gate looks at (its --history): PELT over a year of
            # nightly points per series would make the report take minutes
            start = max(0, len(points) - CHANGE_WINDOW)
            analysis = detect_changes(points[start:], direction=METRIC_DIRECTION[metric])
            for cp in [*analysis.change_points, *([analysis.tail] if analysis.tail else [])]:
                change_idx.append(start + cp.index)
                change_text.append(f"run {run_label(cp.run_id)}: {cp.rel_change:+.1%} "
                                   f"({'confirmed' if cp.confirmed else 'newest runs, unconfirmed'}); "
                                   f"{cp.suspects_text}")
            if analysis.status != "ok":
                change_text.append(f"change points: {analysis.needed} more clean run(s) needed")
        latest_ci = cis[-1]
        rows.append({
            "case": last.case, "device": last.device, "batch_size": last.batch_size or 0, "metric": metric,
            "unit": unit, "runs": len(vals), "unclean": len(rs) - len(clean), "contended": sum(cont),
            "versions": len(changed) + 1,
            "first": format(vals[0], spec),
            "latest": format(vals[-1], spec) + (f" ± {format((latest_ci[1] - latest_ci[0]) / 2, spec)}"
                                                if latest_ci[0] is not None else ""),
            "best": format(max(vals) if higher else min(vals), spec),
            "worst": format(min(vals) if higher else max(vals), spec),
            "latest_run": run_label(last.run_id), "changes": change_text,
            "spark": sparkline(vals, higher_is_better=higher, lows=[c[0] for c in cis], highs=[c[1] for c in cis],
                               contended=cont, changes=change_idx, versions=changed),
            "identity": key,
        })
    order = {m: i for i, (m, _, _) in enumerate(HISTORY_METRICS)}
    return sorted(rows, key=lambda r: (order[r["metric"]], r["device"], r["case"]))


def ratio_table(throughput: dict | None, label) -> dict | None:
    """Measured throughput of each device over every other device's, per
    batch size and at each one's best batch: a cell only where the two
    results are comparable (harness.analysis.comparability); the reasons
    where they are not become the table's notes."""
    if not throughput:
        return None
    cols = [c for c in throughput["columns"] if c["kind"] == "measured"]
    sizes = [row["batch_size"] for row in throughput["rows"]]

    def value(col, bs):
        cell = col["cells"].get(bs)
        try:
            return float(cell["value"]) if cell and cell.get("value") is not None else None
        except (TypeError, ValueError):
            return None

    def check(a, b, ba, bb):
        ra, rb = a.get("results", {}).get(ba), b.get("results", {}).get(bb)
        return comparable(ra, rb) if ra is not None and rb is not None else (False, "")

    pairs, notes = [], []
    for i, a in enumerate(cols):
        for b in cols[i + 1:]:
            if a["family"] == b["family"]:
                continue
            a2, b2 = (b, a) if b["family"] > a["family"] else (a, b)
            verdicts = [check(a2, b2, bs, bs) for bs in sizes]
            if any(ok for ok, _ in verdicts):
                pairs.append((a2, b2))
            why = next((w for ok, w in verdicts if w), "")
            if why:
                ok = any(ok for ok, _ in verdicts)
                notes.append(f"{a2['label']} / {b2['label']}: " + ("" if ok else "not comparable: ") + why)
    if not pairs:
        return {"headers": [], "rows": [], "notes": notes} if notes else None
    rows = []
    for bs in sizes:
        cells = []
        for a, b in pairs:
            va, vb = value(a, bs), value(b, bs)
            ok = check(a, b, bs, bs)[0]
            cells.append(f"{va / vb:.3f}" if va is not None and vb and ok else "n/c" if va is not None and vb else "—")
        rows.append({"label": f"bs{bs}", "cells": cells})
    best = []
    for a, b in pairs:
        pa = {bs: v for bs in sizes if (v := value(a, bs)) is not None}
        pb = {bs: v for bs in sizes if (v := value(b, bs)) is not None}
        if pa and pb:
            ba, bb = max(pa, key=pa.get), max(pb, key=pb.get)
            best.append(f"{pa[ba] / pb[bb]:.3f}" if check(a, b, ba, bb)[0] and pb[bb] else "n/c")
        else:
            best.append("—")
    rows.append({"label": "best batch", "cells": best})
    return {"headers": [f"{a['label']} / {b['label']}" for a, b in pairs], "rows": rows, "notes": notes}


def claim_views(model: str, bf, latest: list[Result]) -> tuple[list[dict], str | None]:
    """Published and measured claim verdicts (harness.analysis.claims)."""
    if bf is None or not any(c.model == model for c in bf.claims):
        return [], None
    out = []
    try:
        verdicts = list(claims_mod.evaluate_published(bf)) + list(claims_mod.evaluate_claims(latest, bf.claims))
    except Exception as exc:  # a sibling module's bug must not cost the whole report
        return [], f"claims not evaluated: {type(exc).__name__}: {exc}"
    for v in verdicts:
        if v.model != model:
            continue
        src = v.source if isinstance(v.source, dict) else getattr(v.source, "__dict__", {}) or {}
        out.append({"id": v.claim_id, "origin": v.origin, "verdict": v.verdict, "reason": v.reason,
                    "text": f"{_dev(v.numerator)} ≥ {v.min_ratio:g} × {_dev(v.denominator)}, "
                            + ("each at its best batch" if v.at == "best_batch" else f"at bs{v.at}"),
                    "ratio": f"{v.ratio:.4f}" if isinstance(v.ratio, (int, float)) else "—",
                    "num": (f"{v.numerator_value:.6g} (bs{v.numerator_batch})"
                            if isinstance(v.numerator_value, (int, float)) else "—"),
                    "den": (f"{v.denominator_value:.6g} (bs{v.denominator_batch})"
                            if isinstance(v.denominator_value, (int, float)) else "—"),
                    "document": src.get("document", ""), "section": src.get("section", "")})
    out.sort(key=lambda c: (c["origin"] != "measured", c["id"]))
    return out, None


def _dev(name: str) -> str:
    return device_label(name)


def gate_rows(model: str, latest: list[Result], outcome, claims: list[dict], claims_note: str | None) -> list[dict]:
    """pass / fail / skip per gate, each with its reason."""
    rows = []
    for stage, name in (("accuracy", "accuracy vs documented baselines"),
                        ("throughput", "throughput vs documented baselines")):
        vs = [v for r in latest if r.stage == stage for v in (x.to_dict() for x in verdicts_of(r.baseline))]
        fails = [v for v in vs if v.get("verdict") == "fail"]
        passes = [v for v in vs if v.get("verdict") == "pass"]
        nc = len(vs) - len(fails) - len(passes)
        if fails:
            rows.append({"gate": name, "verdict": "fail",
                         "reason": f"{len(fails)} of {len(vs)} figures missed: " + "; ".join(
                             v.get("reason", "") for v in fails[:3]) + (" …" if len(fails) > 3 else "")})
        elif passes:
            rows.append({"gate": name, "verdict": "pass", "reason": f"{len(passes)} figure(s) met"
                         + (f", {nc} not comparable (see each figure's reason)" if nc else "")})
        else:
            ran = [r for r in latest if r.stage == stage and r.status in ("passed", "failed")]
            why = (f"{nc} figure(s) not comparable: " + "; ".join(
                       v.get("reason", "") for v in vs if v.get("verdict") == "not_comparable")[:300] if nc else
                   "no documented figure matches what was measured" if ran else
                   next((r.reason for r in latest if r.stage == stage and r.reason), "nothing measured"))
            rows.append({"gate": name, "verdict": "skip", "reason": why})
    par = [r for r in latest if r.stage == "parity"]
    pf = [r for r in par if r.status in ("failed", "error")]
    pp = [r for r in par if r.status == "passed"]
    if pf:
        rows.append({"gate": "export parity", "verdict": "fail",
                     "reason": f"{len(pf)} of {len(pf) + len(pp)} exports disagree: {pf[0].reason}"})
    elif pp:
        rows.append({"gate": "export parity", "verdict": "pass", "reason": f"{len(pp)} export(s) match the framework"})
    else:
        rows.append({"gate": "export parity", "verdict": "skip",
                     "reason": next((r.reason for r in par if r.reason), "no parity case ran")})
    if outcome is not None:
        comps = [c for c in outcome.comparisons if c.model == model]
        regs = [c for c in comps if c.verdict == "regression"]
        miss = [m for m in outcome.missing_baseline if m.startswith(model + " ")]
        if regs:
            rows.append({"gate": "history (regressions)", "verdict": "fail",
                         "reason": f"{len(regs)} significant regression(s): " + "; ".join(
                             f"{c.case}: {c.reason}" for c in regs[:3])})
        elif any(c.verdict == "inconclusive" for c in comps):  # no PASS on what could not be decided
            und = [c for c in comps if c.verdict == "inconclusive"]
            rows.append({"gate": "history (regressions)", "verdict": "inconclusive",
                         "reason": f"{len(und)} of {len(comps)} comparison(s) too imprecise to decide: " + "; ".join(
                             f"{c.case}: {c.need or c.reason}" for c in und[:3])})
        elif comps:
            imp = sum(c.verdict == "improvement" for c in comps)
            rows.append({"gate": "history (regressions)", "verdict": "pass",
                         "reason": f"{len(comps)} comparison(s), no significant regression"
                         + (f", {imp} significant improvement(s)" if imp else "")
                         + (f"; {len(miss)} case(s) without clean history" if miss else "")})
        else:
            rows.append({"gate": "history (regressions)", "verdict": "skip",
                         "reason": f"0 compared: {len(miss)} case(s) without a clean earlier result of the same "
                                   f"identity" if miss else "0 compared: no measured case to hold against history"})
    measured = [c for c in claims if c["origin"] == "measured"]
    if claims_note:
        rows.append({"gate": "relative-device claims", "verdict": "skip", "reason": claims_note})
    elif measured:
        bad = [c for c in measured if c["verdict"] == "fail"]
        ok = [c for c in measured if c["verdict"] == "pass"]
        verdict = "fail" if bad else "pass" if ok else "skip"
        reason = "; ".join(f"{c['id']}: {c['reason']}" for c in (bad or ok or measured)[:3])
        rows.append({"gate": "relative-device claims (measured)", "verdict": verdict, "reason": reason})
    return rows
