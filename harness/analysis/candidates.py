"""Which result of each benchmark key the gate judges.

Per key and host, the candidate is the newest run that *measured* the key
there. A run that only skipped it (a device missing tonight, a filter) is
not the candidate and does not hide the run before it: a regressed run is
judged, whatever ran after it. A key whose newest measurement is older than
its host's newest run is listed as stale, so a nightly that stopped
measuring never passes on last week's figures unseen.
"""

from __future__ import annotations

from harness.results import Result
from harness.results.history import History, run_order


def host_of(runs: dict, rid: str) -> str:
    return ((runs.get(rid) or {}).get("env") or {}).get("hostname") or "?"


def measured(r: Result, gated_stages: set) -> bool:
    return r.stage in gated_stages and r.status in ("passed", "failed")


def per_key(history: History, wanted, gated_stages: set, remeasured: dict) -> tuple[list, list[str]]:
    """The candidate of each key on each host: its newest measurement there (a run
    that only skipped it neither is the candidate nor hides the run before it),
    with the results of the `gate --remeasure` runs of it. ([(result, extras)], stale)."""
    runs = history.runs
    best: dict[tuple, Result] = {}
    for r in history.results:
        run = runs.get(r.run_id)
        if run is None or run.get("status") in ("imported", "abandoned") or r.run_id in remeasured or not wanted(r):
            continue
        if measured(r, gated_stages):
            k = (host_of(runs, r.run_id), r.model, r.case)
            if k not in best or run_order(run) > run_order(runs[best[k].run_id]):
                best[k] = r
    newest = {host_of(runs, rid): rid for rid in history.newest_per_host() if rid not in remeasured}
    newest_res = {(r.run_id, r.model, r.case): r for r in history.run_results(newest.values())}
    out, stale = [], []
    for (host, model, case), r in best.items():
        extras = [x for x in history.results if remeasured.get(x.run_id) == r.run_id and x.model == model
                  and x.case == case and measured(x, gated_stages)]
        extras.sort(key=lambda x: run_order(runs[x.run_id]))
        out.append((r, extras))
        top = newest.get(host)
        if top is not None and top != r.run_id and run_order(runs[top]) > run_order(runs[r.run_id]):
            got = newest_res.get((top, model, case))
            why = f"{got.status} ({got.reason})" if got is not None else "not run"
            stale.append(f"{model} {case}: {why} in the newest run {top}: its newest measurement, run {r.run_id}, "
                         f"is judged instead")
    return out, stale
