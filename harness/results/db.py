"""Where a results store lives and how its schema is kept: SQLAlchemy Core.

A store is named by a path (an SQLite file, the embedded default) or a
database URL (``postgresql://user@host:port/db``, driven by psycopg 3). Both
hold the same three tables. The schema is versioned by an ordered list of
steps (``STEPS``); ``meta.schema_version`` says how many have been applied
(stores written before versioning hold step 1 and no such key).

Why an ordered list of steps and not Alembic: the schema is three tables;
the first release's SQLite files must keep opening as they are (they carry
``meta.format_version`` and no ``alembic_version`` table); and Alembic does
not itself serialise two hosts upgrading one database at the same moment.
Each step here runs inside one transaction that holds the database's writer
lock (SQLite ``BEGIN IMMEDIATE``; a PostgreSQL transaction-scoped advisory
lock), so hosts starting together apply each step exactly once, and a
reader never sees a half-migrated schema.

Passwords: a URL may carry one, but only :func:`redact`-ed forms are ever
shown or stored. Prefer ``PGPASSWORD`` or ``~/.pgpass`` (libpq reads both).
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

from harness.errors import UserError
from harness.results.masking import is_kv_dsn, mask

FORMAT_VERSION = 1  # what readers must understand; bumped only by a step readers cannot ignore
DEFAULT_PATH = ".harness/results.sqlite"
ENV_VAR = "HARNESS_STORE"
_PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
_LOCK_KEY = 0x6861726E  # "harn": the advisory lock held while a PostgreSQL store is migrated

metadata = sa.MetaData()
meta_t = sa.Table("meta", metadata, sa.Column("key", sa.Text, primary_key=True),
                  sa.Column("value", sa.Text, nullable=False))
runs_t = sa.Table(
    "runs", metadata,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("started_at", sa.Text, nullable=False),
    sa.Column("finished_at", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("argv", sa.Text),
    sa.Column("env", sa.Text, nullable=False),
    # added by step 3 (ALTER TABLE on older stores): the store's run order, the
    # writer's process and host, and how far its clock was from the store's
    sa.Column("seq", sa.Integer),
    sa.Column("pid", sa.Integer),
    sa.Column("host", sa.Text),
    sa.Column("clock_skew_s", sa.Float),
)
results_t = sa.Table(
    "results", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Text, sa.ForeignKey("runs.run_id"), nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("case_name", sa.Text, nullable=False),
    sa.Column("stage", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("device", sa.Text, nullable=False),
    sa.Column("batch_size", sa.Integer),
    sa.Column("identity_key", sa.Text, nullable=False),
    sa.Column("created_at", sa.Text, nullable=False),
    sa.Column("record", sa.Text, nullable=False),
    sqlite_autoincrement=True,  # as the first release wrote it: ids never reused
)
_BY_MODEL = sa.Index("results_by_model", results_t.c.model, results_t.c.stage, results_t.c.device,
                     results_t.c.batch_size)


def _step1(conn) -> None:
    """The first release's tables (CREATE IF NOT EXISTS: its files already hold them)."""
    metadata.create_all(conn, checkfirst=True)


def _step2(conn) -> None:
    """Indexes the readers need: a run's results (newest run, imports' duplicate
    check), runs in start order, the newest results first."""
    # plain DDL (both engines speak it): an sa.Index object would join the
    # tables' metadata and be created by step 1 of the next new store
    conn.execute(sa.text("CREATE INDEX IF NOT EXISTS results_by_run ON results (run_id, case_name)"))
    conn.execute(sa.text("CREATE INDEX IF NOT EXISTS runs_by_start ON runs (started_at)"))


# The store's own order of runs: each run takes the next number of this table
# when it starts (SQLite AUTOINCREMENT: never reused; PostgreSQL: a sequence,
# via SERIAL). Created by step 3, not step 1, so older files get it by migrating.
run_seq_t = sa.Table(
    "run_seq", sa.MetaData(),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Text, nullable=False, unique=True),
    sqlite_autoincrement=True,
)
RUN_COLUMNS_3 = (("seq", "INTEGER"), ("pid", "INTEGER"), ("host", "TEXT"), ("clock_skew_s", "REAL"))


def _step3(conn) -> None:
    """Runs ordered by the store, not the clock: a sequence number each run takes
    at its start (existing runs numbered in their old order: start time, then the
    order they were stored in); the writer's pid and host (a run left 'running' by
    a killed process is recognised as abandoned); the writer's clock offset."""
    run_seq_t.create(conn, checkfirst=True)
    have = {c["name"] for c in sa.inspect(conn).get_columns("runs")}
    for name, kind in RUN_COLUMNS_3:
        if name not in have:
            conn.execute(sa.text(f"ALTER TABLE runs ADD COLUMN {name} {kind}"))
    tie = "run_id" if conn.dialect.name == "postgresql" else "rowid"
    old = conn.execute(sa.text(f"SELECT run_id FROM runs WHERE seq IS NULL ORDER BY started_at, {tie}")).scalars().all()
    for run_id in old:
        conn.execute(sa.text("UPDATE runs SET seq = :s WHERE run_id = :r"),
                     {"s": take_seq(conn, run_id), "r": run_id})
    conn.execute(sa.text("CREATE UNIQUE INDEX IF NOT EXISTS runs_by_seq ON runs (seq)"))


def take_seq(conn, run_id: str) -> int:
    """The next number of the store's run order, for `run_id` (inside the caller's transaction)."""
    return int(conn.execute(run_seq_t.insert().values(run_id=run_id)).inserted_primary_key[0])


STEPS = ((1, "tables meta, runs, results", _step1), (2, "indexes: results by run, runs by start", _step2),
         (3, "run order: runs.seq from the store's sequence; runs.pid, host, clock_skew_s", _step3))
SCHEMA_VERSION = STEPS[-1][0]


# -- naming a store -----------------------------------------------------------
def default_spec() -> str:
    return os.environ.get(ENV_VAR) or DEFAULT_PATH


def is_url(spec) -> bool:
    """A database store: a URL, or a libpq keyword/value DSN (``host=... dbname=...``)."""
    return isinstance(spec, str) and (re.match(r"^[a-z][a-z0-9+.-]*://", spec) is not None or is_kv_dsn(spec))


def _kv_to_url(spec: str) -> sa.URL:
    try:
        from psycopg.conninfo import conninfo_to_dict
        kv = {k: str(v) for k, v in conninfo_to_dict(spec).items()}
    except ImportError:
        raise UserError(f"a keyword/value store DSN ({redact(spec)!r}) needs psycopg 3, which is not installed",
                        fix="pip install 'psycopg[binary]', or write it as "
                            "postgresql://USER@HOST:PORT/DATABASE") from None
    except Exception:  # noqa: BLE001 - any parse failure is the user's DSN
        raise UserError(f"cannot read the store DSN {redact(spec)!r}",
                        fix="write it as postgresql://USER@HOST:PORT/DATABASE") from None
    port = kv.pop("port", None)
    return sa.URL.create("postgresql", username=kv.pop("user", None), password=kv.pop("password", None),
                         host=kv.pop("host", None), port=int(port) if port and port.isdigit() else None,
                         database=kv.pop("dbname", None), query=kv)


def parse_url(spec: str) -> sa.URL:
    try:
        url = _kv_to_url(spec) if is_kv_dsn(spec) else sa.make_url(spec)
    except UserError:
        raise
    except Exception:  # noqa: BLE001 - any parse failure is the user's URL
        raise UserError(f"cannot read the store URL {redact(spec)!r}",
                        fix="write it as postgresql://USER@HOST:PORT/DATABASE") from None
    if url.drivername not in _PG_SCHEMES:
        raise UserError(f"store URL scheme {url.drivername!r} is not supported",
                        fix="use a file path (SQLite) or postgresql://USER@HOST:PORT/DATABASE")
    if not url.database:
        raise UserError(f"store URL {redact(spec)!r} names no database", fix="end it with /DATABASE")
    return url.set(drivername="postgresql+psycopg")


def redact(spec) -> str:
    """A store's name as it may be shown or recorded: never its password (any form)."""
    return mask(spec, spec)


def redact_text(text: str, spec) -> str:
    """`text` with the password of `spec` (if any, in any form) masked, wherever it appears."""
    return mask(text, spec)


def where(url: sa.URL) -> str:
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database}"


# -- engines ------------------------------------------------------------------
def sqlite_engine(path: Path, *, read_only: bool, busy_s: float = 60.0) -> sa.Engine:
    target = f"{path.resolve().as_uri()}?mode=ro" if read_only else str(path)

    def connect():
        # isolation_level=None: SQLAlchemy's "begin" event below issues BEGIN
        # itself (the pysqlite recipe), so writers can take the lock up front.
        return sqlite3.connect(target, uri=read_only, timeout=busy_s, isolation_level=None,
                               check_same_thread=False)

    eng = sa.create_engine("sqlite://", creator=connect, poolclass=sa.pool.SingletonThreadPool)

    @event.listens_for(eng, "begin")
    def _begin(conn):
        # IMMEDIATE: take the write lock at BEGIN, where the busy timeout waits
        # for it. A deferred transaction that later upgrades to writing fails at
        # once with "database is locked" when another writer holds the lock.
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return eng


def pg_engine(url: sa.URL, *, read_only: bool) -> sa.Engine:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise UserError(f"a PostgreSQL store ({where(url)}) needs psycopg 3, which is not installed",
                        fix="pip install 'modelzoo-harness[team]' (or: pip install 'psycopg[binary]')") from None
    args = {"connect_timeout": 10, "application_name": "harness"}
    if read_only:
        args["options"] = "-c default_transaction_read_only=on"
    return sa.create_engine(url, connect_args=args, pool_pre_ping=True, pool_size=1, max_overflow=2)


def connect_error(url: sa.URL, exc: Exception, spec) -> UserError:
    """One clear error for a server that cannot be reached or refuses us."""
    msg = redact_text(str(getattr(exc, "orig", None) or exc).strip().splitlines()[0], spec)
    auth = re.search(r"password|authentication|role .* does not exist|no pg_hba", msg, re.I)
    nodb = re.search(r"database .* does not exist", msg, re.I)
    if auth:
        fix = (f"check the user ({url.username or os.environ.get('PGUSER') or 'your login'}) and the password: "
               f"set PGPASSWORD or add a line for {url.host}:{url.port or 5432}:{url.database} to ~/.pgpass "
               "(keep passwords out of the URL)")
    elif nodb:
        fix = f"create it (createdb -h {url.host} -p {url.port or 5432} {url.database}) or fix the URL's database"
    else:
        fix = (f"start the server or fix the host and port in --store / ${ENV_VAR}; "
               f"check with: pg_isready -h {url.host or 'localhost'} -p {url.port or 5432}")
    return UserError(f"cannot open the results database at {where(url)}: {msg}", path=redact(str(spec)), fix=fix)


# -- the schema ---------------------------------------------------------------
def read_versions(conn, where_=None) -> tuple[int | None, int]:
    """(format_version, schema_version) stored in meta; None when meta is empty."""
    rows = dict(conn.execute(sa.select(meta_t.c.key, meta_t.c.value)).all())
    out = []
    for key, default in (("format_version", None), ("schema_version", 1)):
        value = rows.get(key, default)
        try:
            out.append(None if value is None else int(value))
        except (TypeError, ValueError):
            raise UserError(f"results store has format version {value!r} under meta.{key}: not a number",
                            path=where_, fix="this file was not written by the harness (or was edited); it was left "
                                "untouched") from None
    return out[0], out[1]


def check_versions(fmt: int | None, schema: int, where_) -> None:
    if fmt is not None and fmt > FORMAT_VERSION:
        raise UserError(f"results store has format version {fmt}; this harness reads up to {FORMAT_VERSION}",
                        path=where_, fix="upgrade the harness to read it")
    if schema > SCHEMA_VERSION:
        raise UserError(f"results store has schema version {schema}; this harness knows up to {SCHEMA_VERSION}",
                        path=where_, fix="upgrade the harness to use it; the store was left untouched")


def migrate(conn, where_, *, postgres: bool) -> None:
    """Bring the schema up to date inside the caller's transaction (which holds
    the writer lock). A newer or foreign store raises before anything is written."""
    if postgres:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    tables = set(sa.inspect(conn).get_table_names())
    if not postgres and tables and "meta" not in tables:
        raise UserError("not a results store (an SQLite file without the harness tables)", path=where_,
                        fix="point --store at a harness results file; this file was left untouched")
    if postgres and {"runs", "results"} & tables and "meta" not in tables:
        raise UserError("not a results store (tables named runs/results, but no harness meta table)",
                        path=where_, fix="use a database of its own for the harness; nothing was changed")
    fmt, schema = read_versions(conn, where_) if "meta" in tables else (None, 0)
    check_versions(fmt, schema, where_)
    for number, _what, step in STEPS:
        if number > schema:
            step(conn)
    if fmt is None:
        conn.execute(meta_t.insert().values(key="format_version", value=str(FORMAT_VERSION)))
    if schema < SCHEMA_VERSION:
        if conn.execute(sa.select(meta_t.c.key).where(meta_t.c.key == "schema_version")).first():
            conn.execute(meta_t.update().where(meta_t.c.key == "schema_version").values(value=str(SCHEMA_VERSION)))
        else:
            conn.execute(meta_t.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))


def check_readable(conn, where_, *, postgres: bool) -> None:
    tables = set(sa.inspect(conn).get_table_names())
    if not {"meta", "runs", "results"} <= tables:
        what = "the database holds no harness tables" if postgres else "an SQLite file without the harness tables"
        raise UserError(f"not a results store ({what})", path=where_,
                        fix="point --store at a harness results store (run suites into it first); "
                            "it was left untouched")
    check_versions(*read_versions(conn, where_), where_)
