"""The results store: atomic writes, foreign files refused and left untouched."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys

import pytest

from harness.errors import UserError
from harness.results import Result
from harness.results.store import Store
from tests.conftest import REPO


def _result(run_id, i):
    return Result(model="xception", case=f"throughput[cpu-null-fp32-bs{i}]", stage="throughput", status="passed",
                  device="cpu", runner="null", batch_size=i, run_id=run_id, metrics={"throughput_ips": float(i)})


def test_roundtrip_and_identity(store_spec):
    s = Store(store_spec)
    run = s.begin_run({"cpu_model": "x"}, ["pytest"])
    s.add(_result(run, 1))
    s.add(_result(run, 1))
    s.finish_run(run)
    rs = s.results(run_id=run)
    assert len(rs) == 2 and rs[0].identity_key == rs[1].identity_key
    assert rs[0].metrics == {"throughput_ips": 1.0}
    assert len(s.latest_results()) == 1
    assert s.runs()[0]["status"] == "finished"


def test_killed_run_keeps_earlier_results(store_spec):
    tmp_store = store_spec
    # A writer that adds one result every 50 ms until it is killed.
    code = f"""
import sys, time
sys.path.insert(0, {str(REPO)!r})
from harness.results.store import Store
from harness.results import Result
s = Store({str(tmp_store)!r})
run = s.begin_run({{}}, [])
i = 0
while True:
    i += 1
    s.add(Result(model="m", case=f"c{{i}}", stage="throughput", status="passed", device="cpu", run_id=run))
    print(i, flush=True)
    time.sleep(0.05)
"""
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    written = 0
    while written < 10:
        written = int(p.stdout.readline())
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    s = Store(tmp_store)
    kept = s.results()
    assert len(kept) >= 10
    assert [r.case for r in kept] == [f"c{i}" for i in range(1, len(kept) + 1)]
    # the run never finished: it stays marked so history gates can ignore it
    assert s.runs()[0]["status"] == "running"


def test_foreign_file_is_refused_and_untouched(tmp_path):
    f = tmp_path / "notes.sqlite"
    f.write_text("these are my notes, not a database")
    before = f.read_bytes()
    with pytest.raises(UserError, match="not a results store") as e:
        Store(f)
    assert str(f) in str(e.value)
    assert f.read_bytes() == before


def test_foreign_sqlite_database_is_refused_and_untouched(tmp_path):
    f = tmp_path / "other.sqlite"
    db = sqlite3.connect(f)
    db.execute("CREATE TABLE people (name TEXT)")
    db.commit()
    db.close()
    before = f.read_bytes()
    with pytest.raises(UserError, match="without the harness tables"):
        Store(f)
    assert f.read_bytes() == before


def test_newer_format_version_is_refused(tmp_store):
    Store(tmp_store).close()
    db = sqlite3.connect(tmp_store)
    db.execute("UPDATE meta SET value='99' WHERE key='format_version'")
    db.commit()
    db.close()
    with pytest.raises(UserError, match="format version 99"):
        Store(tmp_store)


def test_missing_store_when_reading(tmp_path):
    with pytest.raises(UserError, match="not found"):
        Store(tmp_path / "nope.sqlite", create=False)
