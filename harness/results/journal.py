"""Results the store could not take, kept on local disk until it can.

When a store write fails (its disk is full, another process holds it locked
past the bound, the database server went away), the measured result is not
dropped: it is appended to a journal, one JSON line per entry, flushed and
fsynced before the case reports, in a folder beside the artifact cache
(``.harness/journal/`` by default; ``$HARNESS_JOURNAL`` names another). Each
store has its own file, named by a hash of the store's location, whose lines
name the store with its password masked.

Entries: ``run`` (a run the store could not even record), ``result`` and
``finish`` (the status the run would have been given). :func:`replay` moves
them into the store: a run that is absent is added, a result is added unless
the store already holds it (same run, case, identity and time: the result's
id), and the run is then marked with its kept status. A replay that dies half
way is simply run again, and a journal replayed twice adds nothing the second
time. Replay happens at the start of the next run into that store, or with
``harness replay``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path

from harness.results.record import Result

JOURNAL_ENV = "HARNESS_JOURNAL"
CACHE_ENV = "HARNESS_CACHE"


def journal_dir(cache_root: str | Path | None = None) -> Path:
    """Beside the artifact cache: <cache>/../journal (or $HARNESS_JOURNAL)."""
    if os.environ.get(JOURNAL_ENV):
        return Path(os.environ[JOURNAL_ENV])
    cache = Path(cache_root or os.environ.get(CACHE_ENV) or ".harness/cache")
    return cache.absolute().parent / "journal"


def store_key(store) -> str:
    """Which store a journal belongs to: its file's absolute path, or its masked URL."""
    where = str(store.location) if store.is_postgres else str(Path(store.path).resolve())
    return hashlib.sha256(where.encode()).hexdigest()[:16]


class Journal:
    """The journal of one store."""

    def __init__(self, store, root: str | Path | None = None):
        self.root = Path(root) if root else journal_dir()
        self.location = str(store.location)
        self.path = self.root / f"{store_key(store)}.jsonl"

    @contextmanager
    def _locked(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # writers of one host, and a replay, one at a time
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _append(self, entry: dict) -> None:
        line = json.dumps({**entry, "store": self.location}, default=str) + "\n"
        with self._locked():
            new = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            if new:  # the file's name must survive a power loss too
                dfd = os.open(self.root, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)

    def keep_run(self, row: dict) -> None:
        run = dict(row)
        run["argv"], run["env"] = json.loads(run["argv"]), json.loads(run["env"])
        self._append({"kind": "run", "run": run})

    def keep_result(self, result: Result) -> None:
        self._append({"kind": "result", "result": result.to_dict()})

    def keep_finish(self, run_id: str, status: str) -> None:
        self._append({"kind": "finish", "run_id": run_id, "status": status})

    def entries(self) -> list[dict]:
        """The kept entries; a line cut short by a crash while it was written is skipped."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("kind") in ("run", "result", "finish"):
                out.append(entry)
        return out

    def pending(self) -> int:
        return sum(1 for e in self.entries() if e["kind"] == "result")


def replay(store, root: str | Path | None = None) -> dict | None:
    """Move the journal of `store` into it, exactly once. Returns counts
    ({added, already, runs, journal}) or None when nothing was kept. A store
    write failing here raises the store's StoreUnavailable and keeps the journal."""
    journal = Journal(store, root)
    if not journal.path.exists():
        return None
    counts = {"added": 0, "already": 0, "runs": 0, "journal": str(journal.path)}
    with journal._locked():
        entries = journal.entries()
        known = {r["run_id"] for r in store.runs()}
        for e in entries:
            if e["kind"] == "run" and e["run"]["run_id"] not in known:
                counts["runs"] += bool(store.add_run(e["run"]))
                known.add(e["run"]["run_id"])
        for e in entries:
            if e["kind"] != "result":
                continue
            r = Result(**e["result"])
            if r.run_id not in known:  # a run the journal never saw stored: recorded now, as incomplete
                store.add_run({"run_id": r.run_id, "started_at": r.created_at, "status": "incomplete"})
                known.add(r.run_id)
            if store.has_result(r):
                counts["already"] += 1
            else:
                store.add(r)
                counts["added"] += 1
        for e in entries:
            if e["kind"] == "finish":
                store.finish_run(e["run_id"], e["status"])
        done = journal.path.with_name(journal.path.stem + ".replayed.jsonl")
        with open(done, "a", encoding="utf-8") as fh:  # kept for the record, never replayed again
            fh.write(journal.path.read_text(encoding="utf-8", errors="replace"))
            fh.flush()
            os.fsync(fh.fileno())
        journal.path.unlink()
    return counts
