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
import os
import platform
import sqlite3
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
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
from harness.results import Result, db, masking
from harness.results.db import DEFAULT_PATH, ENV_VAR, FORMAT_VERSION, SCHEMA_VERSION, redact, results_t, runs_t  # noqa: F401

_NOT_A_STORE_FIX = "point --store at a harness results file; this file was left untouched"


WAIT_ENV = "HARNESS_STORE_WAIT"  # seconds a writer waits for a store another process holds locked
DEFAULT_WAIT_S = 300.0
CLOCK_ENV = "HARNESS_CLOCK_OFFSET_S"  # tests: this process's clock set off by so many seconds
SKEW_S = 120.0  # a writer's clock this far from the store's is flagged as skewed


class StoreUnavailable(UserError):
    """The store cannot take a write: the database went away, its disk is full,
    or another process held it locked past the bound."""


def wait_bound() -> float:
    try:
        return max(0.0, float(os.environ.get(WAIT_ENV) or DEFAULT_WAIT_S))
    except ValueError:
        raise UserError(f"${WAIT_ENV} is {os.environ[WAIT_ENV]!r}: not a number of seconds",
                        fix=f"set it to how long a writer may wait for a locked store, e.g. {WAIT_ENV}=300") from None


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def sqlite_failure(why: str) -> str | None:
    """What an SQLite error means for a writer, when the store (not the harness) is at fault."""
    why = why.lower()
    if "full" in why or "disk i/o" in why or "no space" in why:
        return "the disk holding the store is full (or failing)"
    if "locked" in why or "busy" in why:
        return "the store is locked by another writer"
    if "unable to open" in why or "readonly" in why or "read-only" in why:
        return "the store cannot be written"
    return None


def default_path() -> str | Path:
    spec = db.default_spec()
    return spec if db.is_url(spec) else Path(spec)


def new_run_id() -> str:
    return clock().strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]


def clock() -> datetime:
    """This process's wall clock (shown with runs, never used to order them)."""
    now = datetime.now(timezone.utc)
    offset = os.environ.get(CLOCK_ENV)
    return now + timedelta(seconds=float(offset)) if offset else now


class Store:
    """One results store. `spec`: a path, a postgresql:// URL, or None for
    $HARNESS_STORE / .harness/results.sqlite. `read_only`: reports and gates
    (creates nothing, migrates nothing; a foreign or newer store stays untouched)."""

    def __init__(self, spec: str | Path | None = None, *, create: bool = True, read_only: bool = False,
                 notify=_stderr):
        """notify: where a writer says it is waiting for a locked store (a line of text)."""
        spec = str(spec) if spec else db.default_spec()
        masking.remember(spec)
        self.spec = spec  # may hold a password: never shown; `location` is what is shown
        self.location = redact(spec)
        self.notify = notify
        self.wait_s = wait_bound()
        self.read_only = read_only
        self.is_postgres = db.is_url(spec)
        self.path = None if self.is_postgres else Path(spec)
        self.stored = 0  # results this object added
        if self.is_postgres:
            self.url = db.parse_url(spec)
            self.engine = db.pg_engine(self.url, read_only=read_only)
        else:
            self._check_file(create=create and not read_only)
            # SQLite's own busy wait kept short: _retry waits (visibly) up to the bound
            self.engine = db.sqlite_engine(self.path, read_only=read_only, busy_s=min(1.0, self.wait_s))
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
            why = str(getattr(exc, "orig", exc))
            what = sqlite_failure(why)
            fix = ("free space on that disk, or pass --store on another one" if what and "full" in what else
                   f"another process held it locked for over {self.wait_s:g} s; retry later, or raise ${WAIT_ENV}"
                   if what and "locked" in what else "check the file and its folder's permissions")
            raise UserError(f"cannot open the results store: {what or why} ({why})", path=self.path, fix=fix) from None
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

    def _retry(self, fn):
        """SQLite: retry a write another writer holds the lock against, up to the
        wait bound ($HARNESS_STORE_WAIT), saying so after 2 s and every 30 s. PostgreSQL: a
        lost connection is StoreUnavailable (see _write)."""
        start, said, i = time.monotonic(), 0.0, 0
        while True:
            try:
                return fn()
            except (sa.exc.OperationalError, sqlite3.OperationalError) as exc:
                if self.is_postgres:
                    raise  # pool_pre_ping already replaced stale connections
                why = str(getattr(exc, "orig", exc))
                waited = time.monotonic() - start
                if "locked" not in why and "busy" not in why or waited >= self.wait_s:
                    raise
                if waited >= 2 and (not said or waited - said >= 30):  # at 2 s, then every 30 s
                    said = waited
                    self.notify(f"waiting for the store: locked by another writer, {waited:.0f} s "
                                f"(gives up after {self.wait_s:g} s; ${WAIT_ENV}): {self.location}")
                time.sleep(min(0.05 * 2 ** i, 1.0, max(0.0, self.wait_s - waited)))
                i += 1

    def _write(self, fn):
        try:
            return self._retry(fn)
        except (sa.exc.OperationalError, sqlite3.OperationalError) as exc:
            why = db.redact_text(str(getattr(exc, "orig", exc)).strip().splitlines()[0], self.spec)
            if self.is_postgres:
                raise StoreUnavailable(
                    f"lost the results database at {db.where(self.url)} ({why}); "
                    f"the {self.stored} result(s) stored before stay stored", path=self.location,
                    fix="bring the server back; kept results reach it at the next run or with "
                        "`harness replay`") from None
            what = sqlite_failure(why)
            if what is None:
                raise
            if "locked" in what:
                what += f" for over {self.wait_s:g} s (${WAIT_ENV})"
            raise StoreUnavailable(f"the store cannot take the write: {what} ({why})", path=self.location,
                                   fix="free space / release the lock; kept results reach the store at the next "
                                       "run or with `harness replay`") from None

    def close(self):
        self.engine.dispose()

    # -- runs ---------------------------------------------------------------
    def begin_run(self, env: dict, argv: list[str] | None = None, *, run_id: str | None = None,
                  pid: int | None = None) -> str:
        """Start a run (or join it: several workers of one run each call this with
        the same run_id, and the first one creates it). The run takes the store's
        next sequence number: its place in every ordering of runs. `pid`: the
        process the run lives as long as (default this one)."""
        run_id = run_id or new_run_id()
        row = self.run_row(env, argv, run_id=run_id, pid=pid)

        def insert():
            try:
                with self.engine.begin() as conn:
                    if conn.execute(sa.select(runs_t.c.run_id).where(runs_t.c.run_id == run_id)).first() is None:
                        skew = self._clock_skew(conn, datetime.fromisoformat(row["started_at"]))
                        conn.execute(runs_t.insert().values(**row, seq=db.take_seq(conn, run_id), clock_skew_s=skew))
            except sa.exc.IntegrityError:
                pass  # another worker of this run created it between our check and our insert
        self._write(insert)
        return run_id

    def run_row(self, env: dict, argv=None, *, run_id: str, pid: int | None = None) -> dict:
        """A new run's row (what begin_run stores, and what a journal keeps when it cannot)."""
        # microseconds: runs begun within one second keep a readable order in the output
        return dict(run_id=run_id, started_at=_now("microseconds"), finished_at=None, status="running",
                    argv=json.dumps(masking.mask_data([str(a) for a in (argv or [])], self.spec)),
                    env=json.dumps(masking.mask_data(json.loads(json.dumps(env, default=str)), self.spec)),
                    pid=pid or os.getpid(), host=platform.node())

    def _clock_skew(self, conn, local: datetime) -> float | None:
        """Seconds this host's clock is off the store's: PostgreSQL's now(); on
        SQLite only a clock behind the newest run's start can be seen (None: none seen)."""
        if self.is_postgres:
            return round((local - conn.execute(sa.select(sa.func.now())).scalar()).total_seconds(), 3)
        prev = conn.execute(sa.select(runs_t.c.started_at).where(runs_t.c.seq.is_not(None))
                            .order_by(runs_t.c.seq.desc()).limit(1)).scalar()
        try:
            behind = (local - datetime.fromisoformat(prev)).total_seconds() if prev else 0.0
        except ValueError:
            return None
        return round(behind, 3) if behind < -SKEW_S else None

    def finish_run(self, run_id: str, status: str = "finished") -> bool:
        """Mark a run finished (or interrupted); False when the store holds no such run."""
        def update():
            with self.engine.begin() as conn:
                return conn.execute(runs_t.update().where(runs_t.c.run_id == run_id)
                                    .values(finished_at=_now(), status=status)).rowcount > 0
        return bool(self._write(update))

    def runs(self) -> list[dict]:
        """Every run in the store's order (its sequence numbers; a store not yet
        migrated to them, read-only: start time, then the order stored in)."""
        with self.engine.connect() as conn:
            have = {c["name"] for c in sa.inspect(conn).get_columns("runs")}
            cols = [c for c in runs_t.c if c.name in have]
            tie = runs_t.c.run_id if self.is_postgres else sa.literal_column("rowid")
            order = (runs_t.c.seq,) if "seq" in have else (runs_t.c.started_at, tie)
            rows = conn.execute(sa.select(*cols).order_by(*order)).all()
        out = []
        for r in rows:
            m = r._mapping
            out.append(dict(run_id=r.run_id, started_at=r.started_at, finished_at=r.finished_at, status=r.status,
                            argv=json.loads(r.argv or "[]"), env=json.loads(r.env), seq=m.get("seq"),
                            pid=m.get("pid"), host=m.get("host"), clock_skew_s=m.get("clock_skew_s")))
        return out

    def add_run(self, run: dict) -> bool:
        """Insert a run recorded elsewhere (another host's store, an import), keeping
        its id, times and environment; False if a run of that id is already here."""
        def insert():
            with self.engine.begin() as conn:
                if conn.execute(sa.select(runs_t.c.run_id).where(runs_t.c.run_id == run["run_id"])).first():
                    return False
                # its place in this store's order: when it arrives here
                conn.execute(runs_t.insert().values(
                    run_id=run["run_id"], started_at=run["started_at"], finished_at=run.get("finished_at"),
                    status=run.get("status", "finished"), argv=json.dumps(run.get("argv") or []),
                    env=json.dumps(run.get("env") or {}, default=str), seq=db.take_seq(conn, run["run_id"]),
                    pid=run.get("pid"), host=run.get("host"), clock_skew_s=run.get("clock_skew_s")))
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
    return clock().isoformat(timespec=timespec)
