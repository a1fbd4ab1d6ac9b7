"""Runs are ordered by the store, not the clock: a sequence number taken from the
store at each run's start orders gate, show, compare --list and history; a host
clock far from the store's is flagged; a run left 'running' by a dead process
is shown as abandoned and is never a candidate or a baseline."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from harness.cli import main
from harness.errors import ExitCode
from harness.results.history import load_history
from harness.results.store import CLOCK_ENV, Store
from tests.conftest import REPO

YEAR_S = 365 * 86400

# one run at LEVEL img/s (3 repetitions of 10 iterations of batch 8), in its own process
WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[3])
    from harness.results.store import Store
    from tests.report_fixtures import env, throughput_result
    store = Store(sys.argv[1])
    rid = store.begin_run(env(), [])
    level = float(sys.argv[2])
    lat = (8 / level) * np.exp(np.random.default_rng(0).normal(0, 0.01, 30))
    store.add(throughput_result(rid, "efficientnet_b0", "cpu", "onnxruntime", "host", 8, lat))
    store.finish_run(rid)
    store.close()
    print(rid)
""")


def _run(spec, level: float, *, clock: str | None = None) -> str:
    """A finished run at `level` img/s, written by a process whose clock is
    `clock`: None (true), 'env:SECONDS' (the harness's clock hook) or
    'faketime:SPEC' (libfaketime, as an operator's misset clock would be)."""
    cmd, extra = [sys.executable, "-c", WRITER, str(spec), str(level), str(REPO)], {}
    if clock and clock.startswith("env:"):
        extra[CLOCK_ENV] = clock[4:]
    elif clock and clock.startswith("faketime:"):
        cmd = ["faketime", "-f", clock[9:], *cmd]
        extra["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"  # timing stays true; only the wall clock is off
    p = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(REPO), **extra}, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip().splitlines()[-1]


def _cli(capsys, *args):
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out + out.err


CLOCKS = ["env:-31536000"] + (["faketime:-365d"] if shutil.which("faketime") else [])


@pytest.mark.parametrize("clock", CLOCKS)
def test_a_run_with_its_clock_a_year_behind_is_the_newest(tmp_path, capsys, clock):
    spec = str(tmp_path / "s.sqlite")
    for _ in range(3):
        _run(spec, 100.0)
    late = _run(spec, 10.0, clock=clock)  # 10x slower, made last, its clock a year behind
    s = Store(spec, read_only=True)
    runs = s.runs()
    s.close()
    assert runs[-1]["run_id"] == late and runs[-1]["seq"] == 4
    assert runs[-1]["started_at"] < runs[0]["started_at"]  # its clock says it is the oldest
    assert runs[-1]["clock_skew_s"] < -YEAR_S + 3600  # flagged against the run before it
    rc, out = _cli(capsys, "gate", "--store", spec)
    assert rc == ExitCode.FAILED, out
    assert f"run(s) {late}" in out and "REGRESSION" in out and "-90." in out, out
    assert f"run {late} is clock-skewed: its host's clock was 365.0 days behind the store's" in out
    rc, out = _cli(capsys, "show", "--store", spec, "--color", "never")
    assert rc == ExitCode.OK and out.startswith(f"run {late} (finished"), out
    assert "clock-skewed" in out
    rc, out = _cli(capsys, "compare", "--list", "--store", spec)
    assert out.strip().splitlines()[-1].startswith(late)


def test_a_run_with_its_clock_ahead_is_not_pooled_with_the_newest(tmp_path, capsys):
    """A clock set forward (2030) made an earlier run look newest; the store's
    order judges the run made last, against the runs made before it."""
    spec = str(tmp_path / "s.sqlite")
    for _ in range(3):
        _run(spec, 100.0)
    ahead = _run(spec, 100.0, clock=f"env:{4 * YEAR_S}")
    last = _run(spec, 10.0)
    history = load_history([spec])
    assert history.resolve_run("latest") == last
    rc, out = _cli(capsys, "gate", "--store", spec)
    assert rc == ExitCode.FAILED and f"run(s) {last}" in out and ahead not in out.split("run(s)")[1].split()[0], out


def test_postgres_clock_skew_is_measured_against_the_server(pg_server, tmp_path, monkeypatch):
    url = pg_server.create_database()
    s = Store(url)
    on_time = s.begin_run({}, [])
    monkeypatch.setenv(CLOCK_ENV, str(-3 * 3600))
    behind = s.begin_run({}, [])
    monkeypatch.setenv(CLOCK_ENV, str(2 * 86400))
    ahead = s.begin_run({}, [])
    runs = {r["run_id"]: r for r in s.runs()}
    s.close()
    assert [r["seq"] for r in runs.values()] == [1, 2, 3]
    assert abs(runs[on_time]["clock_skew_s"]) < 60
    assert runs[behind]["clock_skew_s"] == pytest.approx(-3 * 3600, abs=60)
    assert runs[ahead]["clock_skew_s"] == pytest.approx(2 * 86400, abs=60)
    notes = load_history([url]).run_notes([on_time, behind, ahead])
    assert len(notes) == 2 and "3.0 h behind" in notes[0] and "2.0 days ahead of" in notes[1]


def test_a_killed_run_is_abandoned_never_candidate_nor_baseline(tmp_path, capsys):
    spec = str(tmp_path / "s.sqlite")
    for _ in range(3):
        _run(spec, 100.0)
    # a run whose process dies without finishing it (as under kill -9: no handler runs)
    code = ("import os, sys; sys.path.insert(0, sys.argv[2]); from harness.results.store import Store; "
            "from tests.report_fixtures import env; s = Store(sys.argv[1]); print(s.begin_run(env(), []), "
            "flush=True); os._exit(9)")
    p = subprocess.run([sys.executable, "-c", code, spec, str(REPO)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    dead = p.stdout.strip()
    history = load_history([spec])
    assert history.runs[dead]["status"] == "abandoned" and history.runs[dead]["stored_status"] == "running"
    assert dead not in history.newest_per_host()
    rc, out = _cli(capsys, "show", dead, "--store", spec, "--color", "never")
    assert f"run {dead} (abandoned" in out
    rc, out = _cli(capsys, "gate", "--store", spec)
    assert dead not in out.split("run(s)")[1].split()[0], out  # not the candidate
    # a run of another host, or of a store without pids, is judged by its age
    db = sqlite3.connect(spec)
    db.execute("UPDATE runs SET host = 'elsewhere', started_at = '2020-01-01T00:00:00+00:00' WHERE run_id = ?",
               (dead,))
    db.commit()
    db.close()
    assert load_history([spec]).runs[dead]["status"] == "abandoned"
    # a live run of this process is running, not abandoned
    s = Store(spec)
    live = s.begin_run({}, [])
    s.close()
    assert load_history([spec]).runs[live]["status"] == "running"


def test_schema_2_store_gets_sequence_numbers_in_its_old_order(tmp_path):
    """Step 3 numbers existing runs by start time, then by the order they were stored in."""
    path = tmp_path / "old.sqlite"
    s = Store(path)
    ids = [s.begin_run({}, []) for _ in range(3)]
    s.close()
    db = sqlite3.connect(path)  # back to a schema-2 store: no sequence, equal start times for two runs
    db.execute("UPDATE runs SET started_at = '2025-01-01T00:00:00+00:00' WHERE run_id IN (?, ?)", ids[:2])
    db.execute("UPDATE runs SET started_at = '2024-01-01T00:00:00+00:00' WHERE run_id = ?", (ids[2],))
    for col in ("seq", "pid", "host", "clock_skew_s"):
        db.execute("DROP INDEX IF EXISTS runs_by_seq")
        db.execute(f"ALTER TABLE runs DROP COLUMN {col}")
    db.execute("DROP TABLE run_seq")
    db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    ro = Store(path, read_only=True)  # readable before migrating: the old order
    assert [r["run_id"] for r in ro.runs()] == [ids[2], ids[0], ids[1]]
    ro.close()
    s = Store(path)
    new = s.begin_run({}, [])
    runs = s.runs()
    s.close()
    assert [(r["run_id"], r["seq"]) for r in runs] == [(ids[2], 1), (ids[0], 2), (ids[1], 3), (new, 4)]
    assert json.loads(json.dumps(runs))  # plain data
