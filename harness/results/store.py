"""The results store: an SQLite file by default, or a PostgreSQL database by URL.

Every result is committed in its own transaction the moment it is measured,
so a run killed half-way keeps everything measured before the kill. A run
that never reached `finish_run` stays marked "running" (or "interrupted"),
and history gates never take such a run as their baseline.

Many writers share one store: the processes of one host (pytest-xdist
workers) and, through PostgreSQL, many hosts. The schema, engines and URL
handling live in :mod:`harness.results.db`.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

try:  # records are parsed by the tens of thousands for reports: orjson where installed (3-4x faster)
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - the standard library's parser reads the same JSON
    _fast_loads = json.loads


def _loads(text):
    try:
        return _fast_loads(text)
    except ValueError:  # NaN / Infinity, which json.dumps writes and orjson refuses
        return json.loads(text)

from harness.errors import UserError
from harness.results import Result, db
from harness.results.db import DEFAULT_PATH, ENV_VAR, FORMAT_VERSION, SCHEMA_VERSION, redact, results_t, runs_t  # noqa: F401

_NOT_A_STORE_FIX = "point --store at a harness results file; this file was left untouched"


class StoreUnavailable(UserError):
    """The database went away while a run was writing to it."""


def default_path() -> str | Path:
    spec = db.default_spec()
    return spec if db.is_url(spec) else Path(spec)


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]


class Store:
    """One results store. `spec`: a path, a postgresql:// URL, or None for
    $HARNESS_STORE / .harness/results.sqlite. `read_only`: reports and gates
    (creates nothing, migrates nothing; a foreign or newer store stays untouched)."""

    def __init__(self, spec: str | Path | None = None, *, create: bool = True, read_only: bool = False):
        spec = str(spec) if spec else db.default_spec()
        self.spec = spec  # may hold a password: never shown; `location` is what is shown
        self.location = redact(spec)
        self.read_only = read_only
        self.is_postgres = db.is_url(spec)
        self.path = None if self.is_postgres else Path(spec)
        self.stored = 0  # results this object added
        if self.is_postgres:
            self.url = db.parse_url(spec)
            self.engine = db.pg_engine(self.url, read_only=read_only)
        else:
            self._check_file(create=create and not read_only)
            self.engine = db.sqlite_engine(self.path, read_only=read_only)
        try:
            self._open()
        except BaseException:
            self.engine.dispose()
            raise

    def _check_file(self, *, create: bool) -> None:
        if self.path.is_dir():
            raise UserError("the results store is a directory, not a file", path=self.path,
                            fix="pass the results file (e.g. .harness/results.sqlite), not its folder")
        if self.path.exists() and not self.path.is_file() or not self.path.exists() and not create:
            raise UserError("results store not found", path=self.path,
                            fix=f"run the suites first, or pass --store / set {ENV_VAR}")
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif self.path.stat().st_size > 0:
            # sqlite3 happily opens any file and only fails later; refuse
            # foreign files before touching them, so they are never modified.
            with open(self.path, "rb") as fh:
                if fh.read(16) != b"SQLite format 3\x00":
                    raise UserError("not a results store (not an SQLite file)", path=self.path, fix=_NOT_A_STORE_FIX)

    def _open(self) -> None:
        try:
            if self.read_only:
                with self.engine.connect() as conn:
                    db.check_readable(conn, self.location, postgres=self.is_postgres)
                return
            self._retry(self._migrate)
            if not self.is_postgres:
                self._retry(self._wal)
        except UserError:
            raise
        except (sa.exc.OperationalError, sqlite3.OperationalError) as exc:
            if self.is_postgres:
                raise db.connect_error(self.url, exc, self.spec) from None
            raise UserError(f"cannot open the results store ({getattr(exc, 'orig', exc)})", path=self.path,
                            fix="another process may hold it locked for long; retry, or check the file") from None
        except sa.exc.DatabaseError as exc:
            text = db.redact_text(str(exc.orig), self.spec)
            if not self.is_postgres and "malformed" in text:  # an SQLite file cut short or damaged
                raise UserError(f"the results store is corrupt ({text})", path=self.location,
                                fix=f"recover what it holds with `sqlite3 {self.path} .recover | sqlite3 recovered.sqlite`"
                                    ", or restore a copy; it was left untouched") from None
            raise UserError(f"not a results store ({text})", path=self.location, fix=_NOT_A_STORE_FIX) from None

    def _migrate(self) -> None:
        with self.engine.begin() as conn:
            db.migrate(conn, self.location, postgres=self.is_postgres)

    def _wal(self) -> None:
        # WAL lets readers (reports) read while writers write; set once, outside
        # any transaction, after the schema check so a refused file stays as it was.
        raw = self.engine.raw_connection()  # no BEGIN: the pragma refuses to run in a transaction
        try:
            if raw.driver_connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                raw.driver_connection.execute("PRAGMA journal_mode=WAL")
        finally:
            raw.close()

    def _retry(self, fn, attempts: int = 8):
        """SQLite: retry a write the busy timeout could not place (lock upgrades,
        journal-mode switches). PostgreSQL: a lost connection is StoreUnavailable."""
        for i in range(attempts):
            try:
                return fn()
            except (sa.exc.OperationalError, sqlite3.OperationalError) as exc:
                if self.is_postgres:
                    raise  # pool_pre_ping already replaced stale connections
                why = str(getattr(exc, "orig", exc))
                if "locked" not in why and "busy" not in why or i == attempts - 1:
                    raise
                time.sleep(0.05 * 2 ** i)
        return None

    def _write(self, fn):
        try:
            return self._retry(fn)
        except sa.exc.OperationalError as exc:
            if not self.is_postgres:
                raise
            raise StoreUnavailable(
                f"lost the results database at {db.where(self.url)} "
                f"({db.redact_text(str(exc.orig).strip().splitlines()[0], self.spec)}); "
                f"the {self.stored} result(s) stored before stay stored", path=self.location,
                fix="bring the server back and run the remaining cases again") from None

    def close(self):
        self.engine.dispose()

    # -- runs ---------------------------------------------------------------
    def begin_run(self, env: dict, argv: list[str] | None = None, *, run_id: str | None = None) -> str:
        """Start a run (or join it: several workers of one run each call this with
        the same run_id, and the first one creates it)."""
        run_id = run_id or new_run_id()
        # microseconds: runs begun within one second (xdist, many hosts) keep their order
        row = dict(run_id=run_id, started_at=_now("microseconds"), finished_at=None, status="running",
                   argv=json.dumps([db.redact_text(str(a), None) for a in (argv or [])]), env=json.dumps(env, default=str))

        def insert():
            try:
                with self.engine.begin() as conn:
                    if conn.execute(sa.select(runs_t.c.run_id).where(runs_t.c.run_id == run_id)).first() is None:
                        conn.execute(runs_t.insert().values(**row))
            except sa.exc.IntegrityError:
                pass  # another worker of this run created it between our check and our insert
        self._write(insert)
        return run_id

    def finish_run(self, run_id: str, status: str = "finished") -> bool:
        """Mark a run finished (or interrupted); False when the store holds no such run."""
        def update():
            with self.engine.begin() as conn:
                return conn.execute(runs_t.update().where(runs_t.c.run_id == run_id)
                                    .values(finished_at=_now(), status=status)).rowcount > 0
        return bool(self._write(update))

    def runs(self) -> list[dict]:
        with self.engine.connect() as conn:
            # ties (one-second times of older stores): the order they were stored in
            tie = runs_t.c.run_id if self.is_postgres else sa.literal_column("rowid")
            rows = conn.execute(sa.select(runs_t).order_by(runs_t.c.started_at, tie)).all()
        return [dict(run_id=r.run_id, started_at=r.started_at, finished_at=r.finished_at, status=r.status,
                     argv=json.loads(r.argv or "[]"), env=json.loads(r.env)) for r in rows]

    def add_run(self, run: dict) -> bool:
        """Insert a run recorded elsewhere (another host's store, an import), keeping
        its id, times and environment; False if a run of that id is already here."""
        def insert():
            with self.engine.begin() as conn:
                if conn.execute(sa.select(runs_t.c.run_id).where(runs_t.c.run_id == run["run_id"])).first():
                    return False
                conn.execute(runs_t.insert().values(
                    run_id=run["run_id"], started_at=run["started_at"], finished_at=run.get("finished_at"),
                    status=run.get("status", "finished"), argv=json.dumps(run.get("argv") or []),
                    env=json.dumps(run.get("env") or {}, default=str)))
                return True
        return bool(self._write(insert))

    def has_result(self, result: Result) -> bool:
        """Whether this very result (same run, case, identity and time) is stored:
        merging the same file twice adds nothing."""
        c = results_t.c
        q = sa.select(c.id).where(c.run_id == result.run_id, c.case_name == result.case,
                                  c.identity_key == result.identity_key, c.created_at == result.created_at)
        with self.engine.connect() as conn:
            return conn.execute(q).first() is not None

    # -- results ------------------------------------------------------------
    def add(self, result: Result) -> None:
        row = _row(result)

        def insert():
            with self.engine.begin() as conn:  # one transaction per result: a kill loses at most the one in flight
                conn.execute(results_t.insert().values(**row))
        self._write(insert)
        self.stored += 1

    def add_many(self, results: list[Result]) -> None:
        """Results measured elsewhere (imports, generated histories), in one transaction."""
        rows = [_row(r) for r in results]

        def insert():
            with self.engine.begin() as conn:
                conn.execute(results_t.insert(), rows)
        if rows:
            self._write(insert)
            self.stored += len(rows)

    def results(self, run_id: str | None = None, model: str | None = None, *,
                run_ids=None, stages=None) -> list[Result]:
        """Stored results in store order; narrowed (by indexed columns) to a run,
        a set of runs, a model or stages."""
        c = results_t.c
        q = sa.select(c.record).order_by(c.id)
        if run_id:
            q = q.where(c.run_id == run_id)
        if run_ids is not None:
            q = q.where(c.run_id.in_(list(run_ids)))
        if model:
            q = q.where(c.model == model)
        if stages is not None:
            q = q.where(c.stage.in_(list(stages)))
        with self.engine.connect() as conn:
            return [Result(**_loads(rec)) for (rec,) in conn.execute(q)]

    def index_rows(self) -> list[tuple]:
        """(id, run_id, model, case_name, status, device) of every result, from
        the columns alone (no JSON): enough to pick which records a command needs."""
        c = results_t.c
        q = sa.select(c.id, c.run_id, c.model, c.case_name, c.status, c.device)
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(q)]

    def records(self, ids) -> list[Result]:
        """The results of these row ids, in store order."""
        ids, out = sorted(ids), []
        c = results_t.c
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                q = sa.select(c.record).where(c.id.in_(ids[i:i + 500])).order_by(c.id)
                out += [Result(**_loads(rec)) for (rec,) in conn.execute(q)]
        return out

    def count(self, run_id: str | None = None) -> int:
        q = sa.select(sa.func.count()).select_from(results_t)
        if run_id:
            q = q.where(results_t.c.run_id == run_id)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar())

    def latest_results(self) -> list[Result]:
        """The newest result of each (model, case), across runs."""
        latest: dict[tuple[str, str], Result] = {}
        for r in self.results():
            latest[(r.model, r.case)] = r
        return list(latest.values())


def _row(result: Result) -> dict:
    if not result.run_id:
        raise ValueError("result has no run_id")
    return dict(run_id=result.run_id, model=result.model, case_name=result.case, stage=result.stage,
                status=result.status, device=result.device, batch_size=result.batch_size,
                identity_key=result.identity_key, created_at=result.created_at,
                record=json.dumps(result.to_dict(), default=str))


def _now(timespec: str = "seconds") -> str:
    return datetime.now(timezone.utc).isoformat(timespec=timespec)
