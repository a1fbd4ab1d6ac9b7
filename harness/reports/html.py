"""The HTML report: one self-contained page rendered from the results store.

Reads only the store (and, for the published figures, baselines.yaml); never
runs anything. Every number on the page is a stored measurement or a
documented figure: measured values are formatted, documented ones are shown
exactly as baselines.yaml holds them. The chart is matplotlib SVG inlined in
the page, so the file opens offline with nothing fetched and no JavaScript.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

from harness.analysis.comparability import is_null
from harness.analysis.regression import evaluate
from harness.analysis.verdicts import verdicts_of
from harness.config.baselines import MODELS, BaselinesFile, load_baselines
from harness.errors import UserError
from harness.fsio import write_text
from harness.reports import training, views
from harness.reports.charts import chart_svg
from harness.reports.formatting import doc as _doc
from harness.reports.formatting import halfwidth
from harness.reports.formatting import ms as _ms
from harness.reports.formatting import num as _num
from harness.reports.formatting import verdict_view as _verdict_view
from harness.reports.formatting import weights_text
from harness.results import STATUSES, Result, db
from harness.results.history import load_history, run_order
from harness.results.liveness import clock_note
from harness.results.store import redact
from harness.vocab import STAGE_NAMES as STAGES
from harness.vocab import device_label
from harness.vocab import device_rank as _device_rank


def _ordered_models(names) -> list[str]:
    names = set(names)
    return [m for m in MODELS if m in names] + sorted(names - set(MODELS))


def _series_name(r: Result) -> str:
    return r.target or "-".join(x for x in (r.device, r.runner, r.precision) if x)


# -- inputs -------------------------------------------------------------------
def _load_baselines(baselines):
    if baselines is None:
        return None, None

    if isinstance(baselines, BaselinesFile):
        return baselines, None
    return load_baselines(baselines), Path(baselines)


def _read_store(store_path, run_id: str | None):
    if store_path is None:
        raise UserError("no results store given", fix="pass the store path (e.g. .harness/results.sqlite)")
    path = str(store_path) if db.is_url(str(store_path)) else Path(store_path)
    # read-only: a missing, foreign or newer file (or a folder) is refused by the store, never modified
    history = load_history([path])
    runs = sorted(history.runs.values(), key=run_order)
    if run_id is not None:
        if run_id not in history.runs:
            known = ", ".join(r["run_id"] for r in runs[-5:]) or "none"
            raise UserError(f"run {run_id!r} is not in the store (latest runs: {known})",
                            path=redact(path) if isinstance(path, str) else path)
        results = history.run_results([run_id])
    else:
        latest: dict[tuple[str, str], Result] = {}
        for r in history.results:  # store order: the newest result of each (model, case) wins
            latest[(r.model, r.case)] = r
        results = list(latest.values())
    return path, runs, results, history


# -- sections -----------------------------------------------------------------
def _counts(results: list[Result]) -> dict:
    c = Counter(r.status for r in results)
    return {s: c.get(s, 0) for s in STATUSES} | {"total": len(results)}


def _stage_counts(results: list[Result]) -> list[dict]:
    by_stage = defaultdict(list)
    for r in results:
        by_stage[r.stage].append(r)
    order = [s for s in STAGES if s in by_stage] + sorted(set(by_stage) - set(STAGES))
    return [{"stage": s, **_counts(by_stage[s])} for s in order]


def _documented_throughput(bf, model: str) -> dict[tuple, list]:
    if bf is None:
        return {}
    groups = defaultdict(list)
    for b in bf.baselines:
        if b.model == model and b.metric == "throughput_ips" and b.batch_size is not None:
            groups[(b.device, b.device_model, b.runner, b.precision, b.weights, b.timing_scope)].append(b)
    return dict(sorted(groups.items(), key=lambda kv: (_device_rank(kv[0][0]), str(kv[0][1:]))))


def _throughput(results: list[Result], bf, model: str, run_label) -> dict | None:
    measured = defaultdict(dict)
    for r in results:
        if r.stage == "throughput" and r.batch_size is not None and not is_null(r):  # no inference: not published
            measured[(r.device, _series_name(r))][r.batch_size] = r
    documented = _documented_throughput(bf, model)
    if not measured and not documented:
        return None

    columns, series = [], []
    for (device, name), cells in sorted(measured.items(), key=lambda kv: (_device_rank(kv[0][0]), kv[0][1])):
        scopes = sorted({r.timing_scope for r in cells.values() if r.timing_scope})
        pts = {bs: r.metrics["throughput_ips"] for bs, r in cells.items()
               if isinstance(r.metrics.get("throughput_ips"), (int, float))}
        best = max(pts, key=pts.get) if pts else None
        col = {"kind": "measured", "label": name, "family": device, "device": device_label(device),
               "scope": "/".join(scopes) or "not recorded", "cells": {}, "detail": "", "source": [],
               "best": f"bs{best} ({_num(pts[best], '.2f')})" if best else "—", "results": cells}
        for bs, r in cells.items():
            v = pts.get(bs)
            title = [f"{r.case}: {r.status}", r.reason, f"run {run_label(r.run_id)}"]
            verdicts = [_verdict_view(x) for x in (v.to_dict() for v in verdicts_of(r.baseline))]
            title += [f"vs {x['id']} ({x['value']} {x['unit']}): {x['verdict']}" for x in verdicts]
            hw = halfwidth(r.metrics)
            col["cells"][bs] = {
                "value": _num(v, ".2f") if v is not None else None, "status": r.status,
                "pm": _num(hw, ".2f") if hw is not None else None, "contended": bool(r.metrics.get("contended")),
                "imprecise": r.metrics.get("precise") is False,
                "scope": r.timing_scope if r.timing_scope and len(scopes) > 1 else None,
                "vs": ", ".join(f"{x['verdict']} vs doc {x['value']}" for x in verdicts),
                "note": r.reason if r.status in ("failed", "error") else "",
                "title": "\n".join(t for t in title if t), "best": bs == best,
                "unstable": bool(r.metrics.get("unstable")),
            }
        columns.append(col)
        if pts:
            series.append({"label": f"{name} ({col['scope']})", "device": device, "documented": False,
                           "points": sorted(pts.items())})
    for (device, device_model, runner, precision, weights, scope), entries in documented.items():
        label = " ".join(x for x in (device_label(device), device_model) if x)
        vals = {b.batch_size: b for b in entries}
        best = max(vals, key=lambda bs: vals[bs].value)
        col = {"kind": "documented", "label": f"{label} (documented)", "family": device, "device": label,
               "scope": scope or "—", "cells": {}, "best": f"bs{best} ({_doc(vals[best].value)})",
               "detail": ", ".join(x for x in (runner, precision, f"weights {weights}" if weights else None) if x)}
        for bs, b in vals.items():
            src = b.source
            title = [b.id, f"{src.document} / {src.section}", f"printed: {src.quote}" if src.quote else "",
                     src.software or "", src.note or ""]
            col["cells"][bs] = {"value": _doc(b.value), "status": "documented", "scope": None, "vs": "",
                                "pm": None, "contended": False, "imprecise": False,
                                "note": "", "title": "\n".join(" ".join(t.split()) for t in title if t),
                                "best": bs == best, "unstable": False}
        col["source"] = sorted({f"{b.source.document} / {b.source.section}" for b in entries})
        columns.append(col)
        series.append({"label": f"{label} documented ({scope or 'scope not given'})", "device": device,
                       "documented": True, "points": sorted((bs, b.value) for bs, b in vals.items())})

    # measured and documented columns of one device family side by side
    columns.sort(key=lambda c: (_device_rank(c["family"]), c["kind"] == "documented"))
    sizes = sorted({bs for c in columns for bs in c["cells"]})
    rows = [{"batch_size": bs, "cells": [c["cells"].get(bs) for c in columns]} for bs in sizes]
    claims = []
    if bf is not None:
        for c in bf.claims:
            if c.model == model:
                num = " ".join(x for x in (device_label(c.numerator), c.numerator_model) if x)
                den = " ".join(x for x in (device_label(c.denominator), c.denominator_model)
                               if x)
                at = "each at its best batch" if c.at == "best_batch" else f"at bs{c.at}"
                claims.append({"id": c.id, "text": f"{num} ≥ {_doc(c.min_ratio)} × {den}, {at}",
                               "document": c.source.document, "section": c.source.section})
    return {"columns": columns, "rows": rows, "series": series, "claims": claims}


def _latency(results: list[Result], run_label) -> list[dict]:
    rows = []
    for r in results:
        m = r.metrics
        if r.stage != "throughput" or "latency_ms_p50" not in m:
            continue
        rows.append({
            "case": r.case, "device": device_label(r.device), "batch_size": r.batch_size,
            "runner": " ".join(x for x in (r.runner, r.runner_version) if x), "scope": r.timing_scope or "—",
            "throughput": _num(m.get("throughput_ips"), ".2f") + (" (null runner: no inference)" if is_null(r) else ""),
            "p50": _ms(m.get("latency_ms_p50")),
            "p90": _ms(m.get("latency_ms_p90")), "p99": _ms(m.get("latency_ms_p99")),
            "gflop_s": _num(m.get("gflop_s"), ".1f"), "peak_kind": m.get("peak_kind"),
            "peak_fraction": _num(100 * m["peak_fraction"], ".1f") + "%" if m.get("peak_fraction") else None,
            "peak_source": m.get("peak_source") or m.get("efficiency_note") or "",
            "cv": _num(100 * m["cv"], ".1f") + "%" if m.get("cv") is not None else "—",
            "unstable": bool(m.get("unstable")), "truncated": bool(m.get("truncated")),
            "iterations": m.get("iterations"), "warmup": m.get("warmup_iterations"),
            "status": r.status, "run": run_label(r.run_id),
            "_key": (_device_rank(r.device), _series_name(r), r.batch_size or 0),
        })
    return sorted(rows, key=lambda x: x.pop("_key"))


def _parity(results: list[Result], run_label) -> list[dict]:
    rows = []
    for r in results:
        if r.stage != "parity" or r.status == "skipped":
            continue
        m = r.metrics
        rows.append({
            "case": r.case, "format": r.artifact_format or "—", "runner": r.runner or "—",
            "batch_size": r.batch_size, "max_abs_diff": _num(m.get("max_abs_diff"), ".3g"),
            "max_abs_diff_rel": _num(m.get("max_abs_diff_rel"), ".3g"), "cosine": _num(m.get("cosine"), ".6f"),
            "top1_agree": _num(100 * m["top1_agree"], ".0f") + "%" if m.get("top1_agree") is not None else "—",
            "status": r.status, "reason": r.reason, "run": run_label(r.run_id),
        })
    return rows


def _accuracy(results: list[Result], run_label) -> list[dict]:
    rows = []
    for r in results:
        if r.stage != "accuracy" or r.status == "skipped":
            continue
        m = r.metrics
        rows.append({
            "case": r.case, "device": device_label(r.device), "batch_size": r.batch_size,
            "top1": _num(m.get("top1"), ".3f"), "top5": _num(m.get("top5"), ".3f"),
            "num_images": m.get("num_images", "—"), "status": r.status, "reason": r.reason, "weights": weights_text(m),
            "baselines": [_verdict_view(v) for v in (v.to_dict() for v in verdicts_of(r.baseline))], "run": run_label(r.run_id),
        })
    return rows


def _documented_accuracy(bf, model: str) -> list[dict]:
    if bf is None:
        return []
    out = []
    for b in bf.baselines:
        if b.model == model and b.metric in ("top1", "top5"):
            out.append({"id": b.id, "metric": b.metric, "value": _doc(b.value), "unit": b.unit,
                        "device": " ".join(x for x in (device_label(b.device), b.device_model) if x),
                        "batch_size": b.batch_size or "—", "weights": b.weights or "—",
                        "document": b.source.document, "section": b.source.section})
    return out


def _skip_groups(results: list[Result]) -> list[dict]:
    groups = defaultdict(list)
    for r in results:
        if r.status == "skipped":
            groups[r.reason or "(no reason recorded)"].append(r)
    out = []
    for reason, rs in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        stages = Counter(r.stage for r in rs)
        out.append({"reason": reason, "count": len(rs),
                    "stages": ", ".join(f"{s} {n}" for s, n in sorted(stages.items(),
                                                                      key=lambda kv: STAGES.index(kv[0])
                                                                      if kv[0] in STAGES else 99)),
                    "cases": sorted(r.case for r in rs)})
    return out


def _problems(results: list[Result], run_label) -> list[dict]:
    return [{"case": r.case, "status": r.status, "reason": r.reason,
             "traceback": r.metrics.get("traceback", ""), "run": run_label(r.run_id)}
            for r in results if r.status in ("failed", "error")]


def _exports(results: list[Result]) -> list[dict]:
    rows = []
    for r in results:
        if r.stage != "export":
            continue
        arts = r.metrics.get("artifacts") or {}
        files = [{"batch_size": bs, "sha256": (a.get("sha256") or "")[:12], "bytes": a.get("bytes"),
                  "export_s": _num(a.get("export_s"), ".1f") if a.get("export_s") is not None else "cached"}
                 for bs, a in sorted(arts.items(), key=lambda kv: int(kv[0]) if str(kv[0]).isdigit() else 0)]
        rows.append({"case": r.case, "status": r.status, "reason": r.reason, "files": files})
    return rows


def _environment(runs: list[dict], run_label) -> list[dict]:
    out = []
    for run in runs:
        env = run.get("env") or {}
        git = env.get("git") or {}
        commit = git.get("commit")
        fw = env.get("frameworks") or {}
        devices = env.get("devices") or {}
        out.append({
            "label": run_label(run["run_id"]), "run_id": run["run_id"], "status": run.get("status"),
            # shown as the host's clock read it; a clock far from the store's is flagged (order: the store's)
            "started_at": f"{run.get('started_at')}{' (clock-skewed)' if clock_note(run) else ''}",
            "finished_at": run.get("finished_at") or "—",
            "argv": " ".join(run.get("argv") or []) or "—",
            "harness": env.get("harness", "—"), "hostname": env.get("hostname", "—"),
            "cpu_model": env.get("cpu_model", "—"), "cpu_cores": env.get("cpu_cores", "—"),
            "os": env.get("os", "—"), "python": env.get("python", "—"),
            "frameworks": ", ".join(f"{k} {v}" for k, v in fw.items()) or "—",
            "devices": ", ".join(device_label(d) for d, present in devices.items() if present) or "—",
            "git": (commit[:12] + (" (dirty)" if git.get("dirty") else "")) if commit else "not a git checkout",
        })
    return out


def _latency_series(results: list[Result]) -> list[dict]:
    pts = defaultdict(dict)
    for r in results:
        v = r.metrics.get("latency_ms_p50")
        if (r.stage == "throughput" and r.batch_size and isinstance(v, (int, float))
                and r.status in ("passed", "failed") and not is_null(r)):
            pts[(r.device, _series_name(r), r.timing_scope)][r.batch_size] = v
    return [{"label": f"{name} ({scope or 'scope not recorded'})", "device": device, "documented": False,
             "points": sorted(p.items())}
            for (device, name, scope), p in sorted(pts.items(), key=lambda kv: (_device_rank(kv[0][0]), kv[0][1]))]


# -- page ---------------------------------------------------------------------
def build_context(store_path, baselines=None, *, run_id: str | None = None,
                  generated_at: datetime | None = None) -> dict:
    """Everything the template shows, as plain data (strings, numbers, lists)."""
    bf, bf_path = _load_baselines(baselines)

    path, all_runs, results, history = _read_store(store_path, run_id)
    try:
        outcome = evaluate(history, candidate_runs=[run_id] if run_id else None)
    except UserError:
        outcome = None  # e.g. a pinned run that is unfinished: the gate row says skip
    used = {r.run_id for r in results}
    runs = [r for r in all_runs if r["run_id"] in used]
    labels = {r["run_id"]: f"#{i}" for i, r in enumerate(runs, 1)}

    def run_label(rid):
        return labels.get(rid, rid or "?")

    by_model = defaultdict(list)
    for r in results:
        by_model[r.model].append(r)
    models = []
    for name in _ordered_models(by_model):
        rs = sorted(by_model[name], key=lambda r: (STAGES.index(r.stage) if r.stage in STAGES else 99,
                                                   _device_rank(r.device), r.case))
        tp = _throughput(rs, bf, name, run_label)
        claims, claims_note = views.claim_views(name, bf, rs)
        models.append({
            "latency_chart": chart_svg(name, _latency_series(rs), quantity="latency p50", unit="ms"),
            "ratios": views.ratio_table(tp, run_label), "claim_verdicts": claims, "claims_note": claims_note,
            "gates": views.gate_rows(name, rs, outcome, claims, claims_note),
            "history": views.history_rows(name, history, run_label),
            "name": name, "counts": _counts(rs), "stages": _stage_counts(rs), "throughput": tp,
            "chart": chart_svg(name, tp["series"]) if tp else None,
            "latency": _latency(rs, run_label), "parity": _parity(rs, run_label),
            "accuracy": _accuracy(rs, run_label), "documented_accuracy": _documented_accuracy(bf, name),
            "skipped_accuracy": [{"case": r.case, "reason": r.reason} for r in rs
                                 if r.stage == "accuracy" and r.status == "skipped"],
            "training": training.training_rows(rs),
            "skips": _skip_groups(rs), "problems": _problems(rs, run_label), "exports": _exports(rs),
        })
    unfinished = [r["run_id"] for r in runs if r.get("status") != "finished"]
    return {
        "generated_at": (generated_at or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
        "store_path": redact(path) if isinstance(path, str) else str(path.resolve()), "baselines_path": str(bf_path.resolve()) if bf_path else None,
        "baselines_loaded": bf is not None, "run_id": run_id, "runs_in_store": len(all_runs),
        "runs": _environment(runs, run_label), "multi_run": len(runs) > 1, "unfinished": unfinished,
        "totals": _counts(results), "models": models,
        "history_runs": len(history.runs),
        "notices": [c.notice for c in outcome.comparisons if c.notice] if outcome else [],
    }


def _environment_jinja():
    # jinja2 is imported when a page is rendered, so that the pytest plugin,
    # which imports harness.reports, keeps pytest's start-up light
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    return Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_report(store_path, baselines=None, *, run_id: str | None = None,
                  generated_at: datetime | None = None) -> str:
    """The report page as a string. `baselines`: a path to baselines.yaml, a
    loaded BaselinesFile, or None (then only figures stored with results show)."""
    from markupsafe import Markup  # with jinja2, at render time

    ctx = build_context(store_path, baselines, run_id=run_id, generated_at=generated_at)
    for m in ctx["models"]:
        # matplotlib's own output: its text is escaped by the SVG writer
        m["chart"] = Markup(m["chart"]) if m["chart"] else None
        m["latency_chart"] = Markup(m["latency_chart"]) if m["latency_chart"] else None
        for h in m["history"]:
            h["spark"] = Markup(h["spark"])  # built from formatted floats only (views.sparkline)
    return _environment_jinja().get_template("report.html.j2").render(**ctx)


def write_report(store_path, out_path, baselines=None, *, run_id: str | None = None) -> Path:
    """Render the report and write it to `out_path` (folders made as needed)."""
    html = render_report(store_path, baselines, run_id=run_id)
    out = Path(out_path)
    if out.is_dir():
        raise UserError("report output path is a directory", path=out, fix="name a file, e.g. report.html")
    write_text(out, html)  # a reader never sees half a page
    return out
