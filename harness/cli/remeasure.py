"""`harness gate --remeasure[=SECONDS]`: measure again what the gate could not judge.

The candidates the gate left undecided (contended, or an interval too wide to
decide) are run again on this machine, through `harness run` with their
suites' node ids and the same store, one new run per round. Each round's
results join their candidate as run-level replicates (never history), and the
gate judges again; rounds go on until every candidate is decided or the next
round would overrun the budget. A neighbour that went away ends in a verdict;
one that stays ends INCONCLUSIVE, never in a false regression (contended
repetitions are redone, and a contended result is never judged).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from harness.config.suite import find_suites
from harness.errors import UserError
from harness.plan import build_plan, read_suite

DEFAULT_BUDGET_S = 300.0
# gate metrics that a rerun can make more precise (accuracy counts do not change)
TIMED_STAGES = ("throughput",)


def this_host() -> str:
    return socket.gethostname()


def undecided(out, history, remeasured: dict[str, str], elsewhere: list | None = None) -> dict[str, set]:
    """{original candidate run: {(model, case)}} of this host's undecided candidates
    (another host's go to ``elsewhere``)."""
    here = this_host()
    todo: dict[str, set] = {}
    keys = [(c.candidate_run, c.model, c.case) for c in out.undecided] + list(out.contended_keys)
    for rid, model, case in keys:
        orig = remeasured.get(rid, rid)
        host = ((history.runs.get(orig) or {}).get("env") or {}).get("hostname")
        if host not in (None, here):
            if elsewhere is not None:
                elsewhere.append(f"{model} {case} (host {host})")
            continue  # another host's candidate: remeasure it there
        todo.setdefault(orig, set()).add((model, case))
    return todo


def node_ids(run: dict, cases: set[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """(node ids, cases not found) from the suites the run was started with
    (the paths in its command line, relative to this directory)."""
    paths = []
    for a in run.get("argv") or []:
        p = Path(str(a).split("::", 1)[0])
        if not str(a).startswith("-") and (p.name == "suite.yaml" and p.is_file() or p.is_dir()):
            paths.append(p)
    by_model: dict[str, list[tuple[Path, set[str]]]] = {}
    try:
        for f in find_suites(paths or ["suites"]):
            suite = read_suite(f)
            by_model.setdefault(suite.model, []).append((f, {c.name for c in build_plan(suite)}))
    except UserError:
        return [], [f"{m} {c}" for m, c in sorted(cases)]
    ids, lost = [], []
    for model, case in sorted(cases):
        hit = next((f for f, names in by_model.get(model, []) if case in names), None)
        if hit is None:
            lost.append(f"{model} {case}")
        else:
            ids.append(f"{hit}::{case}")
    return ids, lost


def run_round(ids: list[str], store: str | None, timeout_s: float) -> int:
    """One `harness run` of the given node ids into the store; its exit code."""
    argv = [sys.executable, "-m", "harness", "run", *ids]
    if store:
        argv += ["--store", str(store)]
    if os.environ.get("HARNESS_REMEASURE_ARGS"):  # e.g. --cache DIR, for the benchmark's scratch stores
        argv += os.environ["HARNESS_REMEASURE_ARGS"].split()
    try:
        return subprocess.run(argv, timeout=max(timeout_s, 1.0), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode
    except subprocess.TimeoutExpired:
        return -1


def remeasure(judge, budget_s: float, store: str | None, say=print):
    """Judge, remeasure the undecided, judge again, within ``budget_s`` seconds.
    ``judge(remeasured)`` -> (history, outcome)."""
    t0 = time.monotonic()
    remeasured: dict[str, str] = {}
    history, out = judge(remeasured)
    last_round = 0.0
    rounds = 0
    while True:
        other: list[str] = []
        todo = undecided(out, history, remeasured, other)
        if other and not rounds:
            out.notes.append(f"remeasure: {len(other)} undecided case(s) were measured on another host; "
                             f"remeasure them there: {', '.join(sorted(other))}")
        if not todo:
            break
        left = budget_s - (time.monotonic() - t0)
        if left <= 0 or (last_round and left < last_round):
            out.notes.append(f"remeasure: budget of {budget_s:g} s spent after {rounds} round(s); "
                             f"{sum(map(len, todo.values()))} case(s) still undecided")
            break
        start = time.monotonic()
        progressed = False
        for orig, cases in todo.items():
            ids, lost = node_ids(history.runs.get(orig) or {}, cases)
            if lost:
                out.notes.append(f"remeasure: no suite here holds {', '.join(lost)} (the run's paths, from this "
                                 f"directory): not remeasured")
            if not ids:
                continue
            before = set(history.runs)
            say(f"remeasure: round {rounds + 1}: {len(ids)} case(s) of run {orig}", file=sys.stderr)
            # the budget decides whether a round starts; a started round is not cut short
            # (a killed `harness run` leaves a run without its results), only stopped at a safety limit
            rc = run_round(ids, store, max(2 * left, 600.0))
            history, _ = judge(remeasured)
            new = [rid for rid in history.runs if rid not in before]
            for rid in new:
                remeasured[rid] = orig
            progressed |= bool(new)
            if not new:
                out.notes.append(f"remeasure: `harness run` of {len(ids)} case(s) stored no run (exit {rc})")
        rounds += 1
        last_round = time.monotonic() - start
        history, out = judge(remeasured)
        if not progressed:
            break
    if remeasured:
        out.notes.append(f"remeasure: {rounds} round(s), {len(remeasured)} run(s) "
                         f"({', '.join(sorted(remeasured))}) pooled with their candidates in "
                         f"{time.monotonic() - t0:.0f} s")
    return out
