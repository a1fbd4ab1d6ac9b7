"""The results store: one SQLite file by default.

Every result is committed in its own transaction the moment it is measured,
so a run killed half-way keeps everything measured before the kill. A run
that never reached `finish_run` stays marked "running" (or "interrupted"),
and history gates never take such a run as their baseline.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from datetime import datetime, timezone
from pathlib import Path

from harness.errors import UserError
from harness.results import Result

FORMAT_VERSION = 1
DEFAULT_PATH = ".harness/results.sqlite"
ENV_VAR = "HARNESS_STORE"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    argv TEXT,
    env TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    model TEXT NOT NULL,
    case_name TEXT NOT NULL,
    stage TEXT NOT NULL,
    status TEXT NOT NULL,
    device TEXT NOT NULL,
    batch_size INTEGER,
    identity_key TEXT NOT NULL,
    created_at TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_by_model ON results(model, stage, device, batch_size);
"""


def default_path() -> Path:
    return Path(os.environ.get(ENV_VAR) or DEFAULT_PATH)


class Store:
    def __init__(self, path: str | Path | None = None, *, create: bool = True, read_only: bool = False):
        self.path = Path(path) if path else default_path()
        if read_only:
            self._open_read_only()
            return
        if not self.path.exists():
            if not create:
                raise UserError("results store not found", path=self.path,
                                fix=f"run the suites first, or pass --store / set {ENV_VAR}")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._check_header()
        self.db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
        try:
            # An SQLite file that holds tables but not ours is someone else's
            # database: refuse it before creating anything in it.
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and "meta" not in tables:
                self.db.close()
                raise UserError("not a results store (an SQLite file without the harness tables)", path=self.path,
                                fix="point --store at a harness results file; this file was left untouched")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(_SCHEMA)
            row = self.db.execute("SELECT value FROM meta WHERE key='format_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise UserError(f"not a results store ({exc})", path=self.path,
                            fix="point --store at a harness results file; this file was left untouched") from None
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('format_version', ?)", (str(FORMAT_VERSION),))
        elif int(row[0]) > FORMAT_VERSION:
            raise UserError(f"results store has format version {row[0]}; this harness reads up to {FORMAT_VERSION}",
                            path=self.path, fix="upgrade the harness to read it")

    def _open_read_only(self):
        # Reports and gates only read: open without creating tables or
        # stamping a version, so a foreign SQLite file is refused untouched.
        if not self.path.is_file():
            raise UserError("results store not found", path=self.path,
                            fix=f"run the suites first, or pass --store / set {ENV_VAR}")
        self._check_header()
        self.db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not {"meta", "runs", "results"} <= tables:
                raise UserError("not a results store (an SQLite file without the harness tables)", path=self.path,
                                fix="point --store at a harness results file; this file was left untouched")
            row = self.db.execute("SELECT value FROM meta WHERE key='format_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise UserError(f"not a results store ({exc})", path=self.path,
                            fix="point --store at a harness results file; this file was left untouched") from None
        except UserError:
            self.db.close()
            raise
        if row is not None and int(row[0]) > FORMAT_VERSION:
            self.db.close()
            raise UserError(f"results store has format version {row[0]}; this harness reads up to {FORMAT_VERSION}",
                            path=self.path, fix="upgrade the harness to read it")

    def _check_header(self):
        # sqlite3.connect happily opens any file and only fails later; refuse
        # foreign files before touching them, so they are never modified.
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as fh:
                if fh.read(16) != b"SQLite format 3\x00":
                    raise UserError("not a results store (not an SQLite file)", path=self.path,
                                    fix="point --store at a harness results file; this file was left untouched")

    def close(self):
        self.db.close()

    # -- runs ---------------------------------------------------------------
    def begin_run(self, env: dict, argv: list[str] | None = None) -> str:
        run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]
        with self.db:
            self.db.execute("INSERT INTO runs VALUES (?, ?, NULL, 'running', ?, ?)",
                            (run_id, _now(), json.dumps(argv or []), json.dumps(env, default=str)))
        return run_id

    def finish_run(self, run_id: str, status: str = "finished") -> None:
        with self.db:
            self.db.execute("UPDATE runs SET finished_at=?, status=? WHERE run_id=?", (_now(), status, run_id))

    def runs(self) -> list[dict]:
        rows = self.db.execute("SELECT run_id, started_at, finished_at, status, argv, env FROM runs "
                               "ORDER BY started_at").fetchall()
        return [dict(run_id=r[0], started_at=r[1], finished_at=r[2], status=r[3], argv=json.loads(r[4] or "[]"),
                     env=json.loads(r[5])) for r in rows]

    def add_run(self, run: dict) -> bool:
        """Insert a run recorded elsewhere (another host's store, an import), keeping
        its id, times and environment; False if a run of that id is already here."""
        if self.db.execute("SELECT 1 FROM runs WHERE run_id=?", (run["run_id"],)).fetchone():
            return False
        with self.db:
            self.db.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                            (run["run_id"], run["started_at"], run.get("finished_at"), run.get("status", "finished"),
                             json.dumps(run.get("argv") or []), json.dumps(run.get("env") or {}, default=str)))
        return True

    def has_result(self, result: Result) -> bool:
        """Whether this very result (same run, case, identity and time) is stored:
        merging the same file twice adds nothing."""
        return self.db.execute(
            "SELECT 1 FROM results WHERE run_id=? AND case_name=? AND identity_key=? AND created_at=?",
            (result.run_id, result.case, result.identity_key, result.created_at)).fetchone() is not None

    # -- results ------------------------------------------------------------
    def add(self, result: Result) -> None:
        if not result.run_id:
            raise ValueError("result has no run_id")
        with self.db:  # one transaction per result: a kill loses at most the one in flight
            self.db.execute(
                "INSERT INTO results (run_id, model, case_name, stage, status, device, batch_size, identity_key,"
                " created_at, record) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (result.run_id, result.model, result.case, result.stage, result.status, result.device,
                 result.batch_size, result.identity_key, result.created_at,
                 json.dumps(result.to_dict(), default=str)))

    def results(self, run_id: str | None = None, model: str | None = None) -> list[Result]:
        q, args = "SELECT record FROM results WHERE 1=1", []
        if run_id:
            q += " AND run_id=?"
            args.append(run_id)
        if model:
            q += " AND model=?"
            args.append(model)
        return [Result(**json.loads(r[0])) for r in self.db.execute(q + " ORDER BY id", args)]

    def latest_results(self) -> list[Result]:
        """The newest result of each (model, case), across runs."""
        latest: dict[tuple[str, str], Result] = {}
        for r in self.results():
            latest[(r.model, r.case)] = r
        return list(latest.values())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
