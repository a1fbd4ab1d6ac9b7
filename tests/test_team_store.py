"""Team scale: one store for many writers (SQLite and a real PostgreSQL started
by the tests), versioned schema, pytest-xdist fan-out, and what a shared
database must never do (leak a password, half-record a run, touch a newer
schema)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
from report_fixtures import SMALL_DEVICES, env, latencies, make_history_store, throughput_result

from harness.analysis.regression import evaluate
from harness.cli import main
from harness.errors import ExitCode, UserError
from harness.results import Result
from harness.results.db import SCHEMA_VERSION
from harness.results.history import load_history
from harness.results.store import Store
from tests.conftest import REPO, color_classifier, run_pytest, write
from tests.pg_server import PASSWORD
from tests.test_plugin import SUITE

FIRST_RELEASE_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (run_id TEXT PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT, status TEXT NOT NULL,
                   argv TEXT, env TEXT NOT NULL);
CREATE TABLE results (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL REFERENCES runs(run_id),
    model TEXT NOT NULL, case_name TEXT NOT NULL, stage TEXT NOT NULL, status TEXT NOT NULL, device TEXT NOT NULL,
    batch_size INTEGER, identity_key TEXT NOT NULL, created_at TEXT NOT NULL, record TEXT NOT NULL);
CREATE INDEX results_by_model ON results(model, stage, device, batch_size);
INSERT INTO meta VALUES ('format_version', '1');
"""


def _result(run_id, i, device="cpu"):
    return Result(model="xception", case=f"throughput[{device}-null-fp32-bs{i}]", stage="throughput",
                  status="passed", device=device, runner="null", batch_size=i, run_id=run_id,
                  metrics={"throughput_ips": float(i)})


def _dump(spec) -> str:
    """Everything a store holds, as text (to look for a leaked password)."""
    s = Store(spec, read_only=True)
    try:
        return json.dumps(s.runs()) + json.dumps([r.to_dict() for r in s.results()])
    finally:
        s.close()


@pytest.fixture
def project(tmp_path):
    color_classifier(tmp_path / "toy.onnx")
    write(tmp_path / "suites" / "toy" / "suite.yaml", SUITE)
    return tmp_path


# -- schema ---------------------------------------------------------------------
def test_first_release_store_keeps_loading_and_is_migrated(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(FIRST_RELEASE_SCHEMA)
    rec = _result("r1", 8).to_dict()
    del rec["device_index"]  # the first release's records lack it
    db.execute("INSERT INTO runs VALUES ('r1', '2025-01-01T02:00:00+00:00', NULL, 'finished', '[]', '{}')")
    db.execute("INSERT INTO results (run_id, model, case_name, stage, status, device, batch_size, identity_key,"
               " created_at, record) VALUES ('r1', 'xception', ?, 'throughput', 'passed', 'cpu', 8, 'k', ?, ?)",
               (rec["case"], rec["created_at"], json.dumps(rec)))
    db.commit()
    db.close()
    before = path.read_bytes()
    ro = Store(path, read_only=True)
    assert [r.batch_size for r in ro.results()] == [8] and ro.results()[0].device_index is None
    ro.close()
    assert path.read_bytes() == before  # reading migrates nothing
    s = Store(path)  # a writer brings it up to date
    s.add(_result("r1", 16))
    s.close()
    db = sqlite3.connect(path)
    meta = dict(db.execute("SELECT key, value FROM meta"))
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert meta == {"format_version": "1", "schema_version": str(SCHEMA_VERSION)}
    assert {"results_by_run", "runs_by_start", "results_by_model"} <= indexes
    assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 2


def _snapshot(spec):
    if "://" not in spec:
        with open(spec, "rb") as fh:
            return fh.read()
    import psycopg

    with psycopg.connect(spec) as conn:
        tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public' ORDER BY 1").fetchall()
        indexes = conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname='public' ORDER BY 1").fetchall()
        meta = conn.execute("SELECT key, value FROM meta ORDER BY key").fetchall()
        n = conn.execute("SELECT COUNT(*), MAX(id) FROM results").fetchall()
        runs = conn.execute("SELECT run_id, status, finished_at FROM runs ORDER BY run_id").fetchall()
    return tables, indexes, meta, n, runs


def _execute(spec, sql):
    if "://" in spec:
        import psycopg

        with psycopg.connect(spec) as conn:
            conn.execute(sql)
    else:
        db = sqlite3.connect(spec)
        db.execute(sql)
        db.commit()
        db.close()


def test_newer_schema_is_refused_untouched(store_spec, tmp_path, capsys):
    s = Store(store_spec)
    rid = s.begin_run(env(), [])
    s.add(_result(rid, 1))
    s.close()
    _execute(store_spec, "UPDATE meta SET value='99' WHERE key='schema_version'")
    before = _snapshot(store_spec)
    for kw in ({}, {"read_only": True}):
        with pytest.raises(UserError, match="schema version 99; this harness knows up to"):
            Store(store_spec, **kw)
    assert main(["gate", "--store", store_spec]) == ExitCode.INPUT
    assert "upgrade the harness" in capsys.readouterr().err
    assert _snapshot(store_spec) == before


# -- many writers -------------------------------------------------------------------
WRITER = """
import sys, time
sys.path.insert(0, {repo!r})
from harness.results.store import Store
from harness.results import Result
go = {go!r}
while not __import__("os").path.exists(go):
    time.sleep(0.005)
s = Store({spec!r})  # several processes create the one new store at once
run = s.begin_run({{"hostname": "w{w}"}}, [])
for i in range({n}):
    s.add(Result(model="m", case=f"w{w}-c{{i}}", stage="throughput", status="passed", device="cpu", run_id=run))
s.finish_run(run)
s.close()
"""


def run_writers(spec, go_file, writers: int, per_writer: int) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen([sys.executable, "-c", WRITER.format(repo=str(REPO), go=str(go_file), spec=spec,
                                                                    w=w, n=per_writer)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in range(writers)]
    time.sleep(0.5)  # every writer is waiting at the line
    go_file.write_text("go")
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def test_concurrent_writers_lose_nothing(store_spec, tmp_path):
    writers, n = 4, 25
    procs = run_writers(store_spec, tmp_path / "go", writers, n)
    for p in procs:
        assert p.returncode == 0, p.stderr
        assert "locked" not in p.stderr and "UNIQUE constraint" not in p.stderr
    s = Store(store_spec, read_only=True)
    cases = sorted(r.case for r in s.results())
    assert cases == sorted(f"w{w}-c{i}" for w in range(writers) for i in range(n))
    assert [r["status"] for r in s.runs()] == ["finished"] * writers


# -- imports into PostgreSQL ----------------------------------------------------------
def test_import_into_postgres_moves_nothing_twice(pg_server, tmp_path, capsys):
    src = make_history_store(tmp_path / "host.sqlite", runs=2, models=("xception",), devices=SMALL_DEVICES,
                             batches=(1, 8))
    url = pg_server.create_database()
    assert main(["bundle", "--store", str(src), "--out", str(tmp_path / "b.json")]) == 0
    assert main(["import", str(src), "--store", url]) == 0
    first = capsys.readouterr().out
    assert main(["import", str(src), str(tmp_path / "b.json"), "--store", url]) == 0
    again = capsys.readouterr().out
    n = len(Store(src, read_only=True).results())
    assert f"{n} result(s) added in 2 new run(s)" in first
    assert again.count(f"0 result(s) added in 0 new run(s), {n} already present") == 2
    assert len(Store(url, read_only=True).results()) == n


# -- a database that refuses or goes away -----------------------------------------------
def test_unreachable_server_is_exit_3_naming_host_and_fix(project, capsys):
    url = "postgresql://harness@127.0.0.1:1/results"  # nothing listens on port 1
    for args in (["gate", "--store", url], ["report", "--store", url, "--out", str(project / "r.html")],
                 ["claims", "--store", url], ["run", str(project / "suites"), "-m", "cpu", "--store", url]):
        assert main(args) == ExitCode.INPUT, args
        err = capsys.readouterr().err
        assert "127.0.0.1:1/results" in err and "pg_isready -h 127.0.0.1 -p 1" in err and "Traceback" not in err
    assert not (project / "r.html").exists() and not (project / ".harness").exists()


def test_bad_credentials_exit_3_no_run_and_no_password_shown(pg_server, project, capsys, monkeypatch):
    url = pg_server.create_database()
    bad = url.replace("harness@", "harness:wrong-Pw-77@")
    monkeypatch.delenv("PGPASSWORD")
    assert main(["run", str(project / "suites"), "-m", "cpu", "--store", bad]) == ExitCode.INPUT
    err = capsys.readouterr().err
    assert "password authentication failed" in err and "PGPASSWORD" in err and f"127.0.0.1:{pg_server.port}" in err
    assert "wrong-Pw-77" not in err
    # the plugin refuses the same way before any case runs
    p = run_pytest(["suites", "-m", "cpu", "--harness-store", bad], cwd=project, env={"PGPASSWORD": ""})
    assert p.returncode == ExitCode.INPUT and "wrong-Pw-77" not in p.stdout + p.stderr
    assert "password authentication failed" in p.stdout + p.stderr
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    with pytest.raises(UserError, match="no harness tables"):
        Store(url, read_only=True)  # nothing was created: no run, no tables


def test_password_in_url_is_never_written(pg_server, project, capsys, monkeypatch):
    url = pg_server.create_database().replace("harness@", f"harness:{PASSWORD}@")
    monkeypatch.delenv("PGPASSWORD")  # only the URL carries it
    report = project / "report.html"
    p = run_pytest(["suites", "-m", "cpu", "--harness-store", url, "--harness-report", str(report)], cwd=project,
                   env={"PGPASSWORD": ""})
    assert p.returncode == 0, p.stdout + p.stderr
    assert "harness:***@127.0.0.1" in p.stdout
    # a first run has nothing to compare (and on a busy host is contended): any verdict but an input error
    assert main(["gate", "--store", url, "--json", str(project / "g.json")]) != ExitCode.INPUT
    assert main(["report", "--store", url, "--out", str(project / "r2.html")]) == 0
    assert main(["export", "--format", "csv", "--store", url, "--out", str(project / "x.csv")]) == 0
    out = capsys.readouterr()
    stored = _dump(url)
    assert "harness:***@" in stored  # the command line is kept, with the password masked
    for where, text in {"pytest output": p.stdout + p.stderr, "store": stored, "cli output": out.out + out.err,
                        "report": report.read_text(), "report 2": (project / "r2.html").read_text(),
                        "gate json": (project / "g.json").read_text(), "csv": (project / "x.csv").read_text()}.items():
        assert PASSWORD not in text, where


STOPPER = """
import json, os, subprocess
import pytest

_done = []


def pytest_runtest_logfinish(nodeid, location):
    _done.append(nodeid)
    if len(_done) == 1:  # the server goes away after the first case
        subprocess.run(json.loads(os.environ["PG_STOP"]), check=True, capture_output=True)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    if os.environ.get("PG_START"):  # back before the harness closes the run
        subprocess.run(json.loads(os.environ["PG_START"]), check=True, capture_output=True)
"""


@pytest.mark.parametrize("comes_back", [True, False])
def test_server_going_away_mid_run(pg_server, project, comes_back):
    url = pg_server.create_database()
    (project / "conftest.py").write_text(textwrap.dedent(STOPPER))
    extra = {"PG_STOP": json.dumps(pg_server.stop_command("immediate"))}
    if comes_back:
        extra["PG_START"] = json.dumps(pg_server.start_command())
    try:
        p = run_pytest(["suites", "-m", "cpu", "--harness-store", url], cwd=project, env=extra)
    finally:
        if not comes_back:
            pg_server.resume()
    out = p.stdout + p.stderr
    # the cases measured while the server was away are kept in the journal, not lost
    # (tests/test_store_faults.py replays them); pytest's own exit is "tests failed"
    assert p.returncode == pytest.ExitCode.TESTS_FAILED, out
    assert "[not stored]" in out and f"lost the results database at 127.0.0.1:{pg_server.port}" in out
    assert "NOT STORED: 2 measured result(s)" in out and "stay stored" in out
    s = Store(url, read_only=True)
    (run,) = s.runs()
    assert [r.case for r in s.results()] == ["export[onnx]"]  # the case stored before stays
    if comes_back:
        assert run["status"] == "incomplete" and f"run {run['run_id']} is marked incomplete" in out
    else:
        assert run["status"] == "running" and "could not mark" in out


# -- pytest-xdist ----------------------------------------------------------------------
def test_two_workers_share_one_run(store_spec, project):
    p = run_pytest(["suites", "-m", "cpu", "-n", "2", "--harness-store", store_spec], cwd=project)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "2 workers [3 items]" in p.stdout and "(2 workers): finished, 3 results" in p.stdout
    s = Store(store_spec, read_only=True)
    (run,) = s.runs()
    cases = [r.case for r in s.results()]
    assert run["status"] == "finished" and run["env"]["workers"] == 2
    assert sorted(cases) == ["export[onnx]", "throughput[host-bs1]", "throughput[host-bs4]"]
    assert {r.run_id for r in s.results()} == {run["run_id"]}
    assert all(r.device_index is None for r in s.results())  # the CPU has no index


def test_worker_device_pinning():
    from harness.runners.devices import DeviceReport, GpuInfo, NpuInfo, pin_worker

    rep = DeviceReport(npu=NpuInfo(chips=["310P3"] * 4), gpus=[GpuInfo(0, "T4"), GpuInfo(1, "T4")])
    envs = [{} for _ in range(5)]
    pins = [pin_worker(w, rep, environ=e) for w, e in enumerate(envs)]
    assert [e["ASCEND_RT_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "2", "3", "0"]
    assert {e["ASCEND_DEVICE_ID"] for e in envs} == {"0"}
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "0", "1", "0"]
    assert pins[2] == {"ascend310p": 2, "gpu": 0}
    mixed = DeviceReport(npu=NpuInfo(chips=["310", "310P3", "310", "310P3"]))
    assert [pin_worker(w, mixed, environ={}, families=["ascend310p"]) for w in range(3)] == \
        [{"ascend310p": 1}, {"ascend310p": 3}, {"ascend310p": 1}]  # only the cards -m selects
    narrowed = {"ASCEND_RT_VISIBLE_DEVICES": "4,6"}  # a host already limited to two cards
    assert pin_worker(1, DeviceReport(npu=NpuInfo(chips=["310P3"] * 8)), environ=narrowed) == {"ascend310p": 6}


def test_multi_worker_cpu_figures_are_not_held_against_single_worker_history(store_spec):
    make_history_store(store_spec, runs=3, models=("xception",), devices=SMALL_DEVICES, batches=(8,))
    s = Store(store_spec)
    rid = s.begin_run(env() | {"workers": 2}, ["pytest", "-n", "2"])
    import numpy as np

    rng = np.random.default_rng(5)
    for device, runner, scope, base in SMALL_DEVICES:
        s.add(throughput_result(rid, "xception", device, runner, scope, 8, latencies(rng, base * 8 ** 0.3, 8, 20)))
    s.finish_run(rid)
    s.close()
    out = evaluate(load_history([store_spec]), candidate_runs=[rid])
    assert {c.device for c in out.comparisons} == {"ascend310"}  # each worker had its own NPU: compared
    assert any("2 worker(s) sharing the CPU" in m and "not comparable" in m for m in out.missing_baseline)


def test_n_auto_starts_one_worker_per_device_of_the_selected_families(monkeypatch):
    from harness import plugin
    from harness.runners import devices
    from harness.runners.devices import DeviceReport, GpuInfo, NpuInfo

    rep = DeviceReport(npu=NpuInfo(chips=["310P3", "310P3", "310P3", "310"]), gpus=[GpuInfo(0, "T4")])
    monkeypatch.setattr(devices, "detect", lambda: rep)

    class Config:
        def __init__(self, expr):
            self.expr = expr

        def getoption(self, name, default=None):
            return self.expr

    assert plugin.pytest_xdist_auto_num_workers(Config("ascend310p and throughput")) == 3
    assert plugin.pytest_xdist_auto_num_workers(Config("ascend310 or gpu")) == 2
    assert plugin.pytest_xdist_auto_num_workers(Config("cpu")) is None  # xdist's default: one per core


def test_show_reads_a_database_store(store_spec, capsys, monkeypatch):
    """`harness show` takes a database URL (--store or $HARNESS_STORE) like every other command."""
    make_history_store(store_spec, runs=1, models=("xception",), devices=SMALL_DEVICES, batches=(8,))
    assert main(["show", "--store", store_spec, "--color", "never"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "xception" in out and "run " in out
    monkeypatch.setenv("HARNESS_STORE", store_spec)
    assert main(["show", "--color", "never"]) == ExitCode.OK
    assert capsys.readouterr().out == out
