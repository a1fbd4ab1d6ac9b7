"""History: the runs and results of one or more stores, read-only, merged without duplicates."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from harness.errors import UserError
from harness.results.db import is_url, redact_text
from harness.results.liveness import clock_note, mark_abandoned
from harness.results.identity import machine_class
from harness.results.record import Result
from harness.results.store import Store, default_path, redact
from harness.vocab import HOST_DEVICE


@dataclass
class History:
    """Runs and results read (read-only) from one or more stores."""

    runs: dict[str, dict]
    results: list[Result]
    paths: list  # the stores read: Paths, or redacted database URLs
    candidates: list[str] | None = None  # load_history(gate_depth=...): the candidate runs it resolved

    @cached_property
    def machine_classes(self) -> dict[str, str]:
        """run id -> machine class of its host, hashed once per run (not per result)."""
        return {rid: machine_class(run.get("env")) for rid, run in self.runs.items()}

    def run_results(self, run_ids) -> list[Result]:
        ids = set(run_ids)
        return [r for r in self.results if r.run_id in ids]

    def resolve_run(self, ref: str) -> str:
        """A run id, a unique prefix of one, or 'latest'."""
        if ref == "latest":
            if not self.runs:
                raise UserError("the store holds no runs", path=self.paths[0] if self.paths else None)
            return max(self.runs.values(), key=run_order)["run_id"]
        hits = [rid for rid in self.runs if rid == ref] or [rid for rid in self.runs if rid.startswith(ref)]
        if len(hits) != 1:
            known = ", ".join(sorted(self.runs)[-5:]) or "none"
            what = "is not" if not hits else "matches several runs"
            raise UserError(f"run {ref!r} {what} in {', '.join(map(str, self.paths))} (newest: {known})",
                            fix="pass a run id (or a unique prefix) from `harness compare --list`")
        return hits[0]

    def cpu_workers(self, r: Result) -> int:
        """How many processes shared the CPU while `r` was measured: a CPU figure
        measured beside other workers is comparable only with figures measured
        with as many (accelerators: each worker has its own device, always 1)."""
        if r.device != HOST_DEVICE:
            return 1
        return int(((self.runs.get(r.run_id) or {}).get("env") or {}).get("workers") or 1)

    def run_notes(self, run_ids) -> list[str]:
        """What the output must say about these runs: a clock far from the store's."""
        return [n for n in (clock_note(self.runs[r]) for r in run_ids if r in self.runs) if n]

    def newest_per_host(self) -> list[str]:
        """The newest run of each host: tonight's candidates when one job ran per device host."""
        newest: dict[str, dict] = {}
        for r in self.runs.values():
            if r.get("status") in ("imported", "abandoned"):
                # results brought in by `harness import` (ais_bench summaries,
                # published tables) are not tonight's measurements; a run whose
                # process died is no candidate either
                continue
            host = (r.get("env") or {}).get("hostname") or "?"
            if host not in newest or run_order(r) > run_order(newest[host]):
                newest[host] = r
        return [r["run_id"] for r in newest.values()]


def run_order(run: dict) -> int:
    """A run's place in the history: the store's sequence number, never its clock
    (a host whose clock is a year behind still made the newest run). Runs of
    several stores: the first store's in its order, then each further store's
    runs that are new, in that store's order."""
    return run.get("_seq", -1)


FIRST = -2  # before every run (run_order of no run)


def _spec(p):
    s = str(p)
    return s if is_url(s) else Path(s)


_SPARE = 5  # rows read beyond `depth` per group (see _gate_records)


def load_history(paths, *, gate_depth: int | None = None, candidates: list[str] | None = None) -> History:
    """The runs and results of the given stores (paths or database URLs).

    With `gate_depth`, only what the history gate reads: every result of the
    candidate runs (`candidates`: run ids, prefixes or 'latest'; default the
    newest run of each host), and from earlier runs the newest `gate_depth`
    clean results of each identity (per CPU worker count), plus the results of
    earlier unfinished runs (the gate names those). Which rows those are is
    decided from the indexed columns; only their records are parsed.
    """
    specs = [_spec(p) for p in (paths or [default_path()])]
    shown = [redact(p) if isinstance(p, str) else p for p in specs]
    runs: dict[str, dict] = {}
    stores = []
    try:
        for p in specs:
            stores.append(Store(p, read_only=True))
            with _reading(p):
                for run in stores[-1].runs():  # in the store's order (its sequence)
                    if run["run_id"] not in runs:
                        run["_seq"] = len(runs)
                        runs[run["run_id"]] = mark_abandoned(run)
        history = History(runs, [], shown)
        if gate_depth is not None:
            history.candidates = ([history.resolve_run(r) for r in candidates] if candidates
                                  else history.newest_per_host())
        seen = set()
        for p, store in zip(specs, stores):
            with _reading(p):
                rs = store.results() if gate_depth is None else _gate_records(store, history, gate_depth)
            for r in rs:
                if r.metrics.get("origin") == "published":
                    # documents' figures imported with `harness import --published`:
                    # baselines.yaml already supplies them, and they are no measurement
                    continue
                key = (r.run_id, r.case, r.model, r.created_at)
                if key not in seen:  # the same run merged into two stores counts once
                    seen.add(key)
                    history.results.append(r)
    finally:
        for store in stores:
            store.close()
    return history


class _reading:
    """Any failure while reading a store: one UserError naming it (password masked)."""

    def __init__(self, spec):
        self.spec = spec

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, UserError):
            return False
        where = redact(self.spec) if isinstance(self.spec, str) else self.spec
        raise UserError(f"cannot read results ({kind.__name__}: {redact_text(str(exc), self.spec)})", path=where,
                        fix="the store may be damaged or the server gone; it was left untouched") from None


def _gate_records(store: Store, history: History, depth: int) -> list[Result]:
    """The gate's share of one store. The gate holds a candidate case against the
    newest `depth` clean results of the same case on the same machine class (and,
    on the CPU, the same worker count) whose benchmark key matches; here every
    such group keeps its newest `depth` + 5 clean rows (a candidate whose key
    went back to one older than the group's newest rows could miss some), and a
    group whose kept rows include a truncated or contended result is read whole."""
    runs, cands = history.runs, set(history.candidates or [])
    start = min((run_order(runs[c]) for c in cands if c in runs), default=FIRST)
    mclass = history.machine_classes
    keep: set[int] = set()
    groups: dict[tuple, list] = defaultdict(list)
    for row_id, run_id, model, case, status, device in store.index_rows():
        run = runs.get(run_id)
        if run_id in cands:
            keep.add(row_id)
        elif run is None or run_order(run) >= start:
            continue  # never in the gate's pool
        elif run.get("status") != "finished":
            keep.add(row_id)  # never a reference, but the gate says which runs it left out
        elif status == "passed":
            workers = int((run.get("env") or {}).get("workers") or 1) if device == HOST_DEVICE else 1
            groups[(model, case, mclass[run_id], workers)].append((run_order(run), row_id))
    cut = depth + _SPARE
    for g in groups.values():
        g.sort(reverse=True)
        keep.update(i for _, i in g[:cut])
    ids = sorted(keep)
    records = store.records(ids)
    unclean = {i for i, r in zip(ids, records) if r.metrics.get("truncated") or r.metrics.get("contended")}
    more = {i for g in groups.values() if len(g) > cut and unclean & {j for _, j in g[:cut]} for _, i in g[cut:]}
    if not more:
        return records
    by_id = dict(zip(ids, records))  # the kept rows are parsed already: read only the extra ones
    by_id.update(zip(sorted(more), store.records(more)))
    return [by_id[i] for i in sorted(by_id)]
