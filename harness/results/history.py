"""History: the runs and results of one or more stores, read-only, merged without duplicates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError
from harness.results.record import Result
from harness.results.db import redact_text
from harness.results.store import Store, default_path, redact


@dataclass
class History:
    """Runs and results read (read-only) from one or more stores."""

    runs: dict[str, dict]
    results: list[Result]
    paths: list  # the stores read: Paths, or redacted database URLs

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
        if r.device != "cpu":
            return 1
        return int(((self.runs.get(r.run_id) or {}).get("env") or {}).get("workers") or 1)

    def newest_per_host(self) -> list[str]:
        """The newest run of each host: tonight's candidates when one job ran per device host."""
        newest: dict[str, dict] = {}
        for r in self.runs.values():
            if r.get("status") == "imported":
                # results brought in by `harness import` (ais_bench summaries,
                # published tables) are not tonight's measurements
                continue
            host = (r.get("env") or {}).get("hostname") or "?"
            if host not in newest or run_order(r) > run_order(newest[host]):
                newest[host] = r
        return [r["run_id"] for r in newest.values()]


def run_order(run: dict) -> tuple:
    # started_at has one-second resolution; runs begun within the same second
    # keep the order the store holds them in.
    return run.get("started_at") or "", run.get("_seq", 0)


def _spec(p):
    s = str(p)
    return s if "://" in s else Path(s)


def load_history(paths) -> History:
    """Everything in the given stores (paths or database URLs)."""
    specs = [_spec(p) for p in (paths or [default_path()])]
    runs: dict[str, dict] = {}
    results, seen = [], set()
    for p in specs:
        where = redact(p) if isinstance(p, str) else p
        store = Store(p, read_only=True)
        try:
            for run in store.runs():
                if run["run_id"] not in runs:
                    run["_seq"] = len(runs)
                    runs[run["run_id"]] = run
            for r in store.results():
                if r.metrics.get("origin") == "published":
                    # documents' figures imported with `harness import --published`:
                    # baselines.yaml already supplies them, and they are no measurement
                    continue
                key = (r.run_id, r.case, r.model, r.created_at)
                if key not in seen:  # the same run merged into two stores counts once
                    seen.add(key)
                    results.append(r)
        except Exception as exc:
            raise UserError(f"cannot read results ({type(exc).__name__}: {redact_text(str(exc), p)})", path=where,
                            fix="the store may be damaged or the server gone; it was left untouched") from None
        finally:
            store.close()
    return History(runs, results, [redact(p) if isinstance(p, str) else p for p in specs])


