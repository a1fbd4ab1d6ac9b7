"""Nothing measured is lost: store faults injected into real `harness run`s.

Each fault strikes after the first case of a three-case run has been stored:

* the store's filesystem fills up (a 600 KB tmpfs, mounted when the tests run
  as root; otherwise skipped with the reason);
* another process holds the SQLite store locked (BEGIN EXCLUSIVE) for longer
  than $HARNESS_STORE_WAIT;
* the PostgreSQL server (tests/pg_server.py) is stopped.

Every measured result must end up in the store exactly once: the run exits
NOT_STORED, says which cases were kept in the journal and where, shows no
traceback, is marked incomplete where the store can still be written, and the
kept results are replayed (by `harness replay`, or the next run) exactly once.
Each fault is repeated $HARNESS_FAULT_REPEATS times (default 1; the issue's
experiment: 10).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from harness.errors import ExitCode
from harness.results.history import load_history
from harness.results.store import Store
from tests.conftest import REPO, color_classifier, write

REPEATS = int(os.environ.get("HARNESS_FAULT_REPEATS") or 1)
MODELS = ("toy_a", "toy_b", "toy_c")  # one export case each: three cheap measured results per run
SUITE = """\
    schema_version: 1
    model: {model}
    source: {{kind: onnx, path: ../../toy.onnx, num_classes: 3}}
    input: {{size: 32, preprocess: imagenet_resize256_crop224}}
    export: [onnx]
    targets:
      - {{name: host, device: cpu, runner: "null", format: onnx, batch_sizes: [1], stages: [throughput]}}
    """

# after the first case: the fault named by $FAULT strikes
INJECTOR = """
import json, os, subprocess, sys, time

_done = []


def pytest_runtest_logfinish(nodeid, location):
    _done.append(nodeid)
    if len(_done) != 1:
        return
    fault = os.environ["FAULT"]
    if fault == "full":  # fill the store's filesystem to the last byte
        fd = os.open(os.environ["FILL"], os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\\0" * 4096)
        except OSError:
            pass
        os.close(fd)
    elif fault == "lock":  # another process takes the write lock and holds it past the bound
        code = ("import sqlite3, sys, time; db = sqlite3.connect(sys.argv[1], isolation_level=None); "
                "db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(float(sys.argv[2])); "
                "db.execute('COMMIT')")
        p = subprocess.Popen([sys.executable, "-c", code, os.environ["STORE"], os.environ["HOLD"]],
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "locked"
    elif fault == "pg":
        subprocess.run(json.loads(os.environ["PG_STOP"]), check=True, capture_output=True)
"""


@pytest.fixture
def project(tmp_path):
    color_classifier(tmp_path / "toy.onnx")
    for m in MODELS:
        write(tmp_path / "suites" / m / "suite.yaml", SUITE.format(model=m))
    (tmp_path / "conftest.py").write_text(textwrap.dedent(INJECTOR))
    return tmp_path


def _harness(args, cwd, env=None, timeout=300):
    e = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    e.pop("PYTEST_ADDOPTS", None)
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=timeout)


def _stored(spec) -> tuple[dict, list[tuple]]:
    s = Store(spec, read_only=True)
    try:
        return {r["run_id"]: r["status"] for r in s.runs()}, [(r.run_id, r.model, r.case) for r in s.results()]
    finally:
        s.close()


def _check_run(p, spec, cwd, *, marked: bool):
    """The run: exit NOT_STORED, no traceback, two cases kept; then replayed exactly once."""
    out = p.stdout + p.stderr
    assert p.returncode == ExitCode.NOT_STORED, out
    assert "Traceback" not in out and "INTERNALERROR" not in out, out
    journal = cwd / ".harness" / "journal"
    assert out.count("measured (passed), not stored: kept in " + str(journal)) >= 2, out
    assert "2 result(s) measured but not stored, exit 7" in out, out
    runs, rows = _stored(spec)
    (run_id,) = runs
    assert len(rows) == 1  # the case before the fault
    if marked:
        assert runs[run_id] == "incomplete", out
    else:  # the store could take no mark either: its process gone, readers show it abandoned, never a baseline
        assert runs[run_id] == "running" and load_history([spec]).runs[run_id]["status"] == "abandoned", out
    kept = [json.loads(line) for f in journal.glob("*.jsonl") for line in f.read_text().splitlines()]
    assert sum(e["kind"] == "result" for e in kept) == 2
    r = _harness(["replay", "--store", spec], cwd)
    assert r.returncode == ExitCode.OK and "2 kept result(s) stored, 0 already there" in r.stdout, r.stdout + r.stderr
    again = _harness(["replay", "--store", spec], cwd)
    assert again.returncode == ExitCode.OK and "nothing kept" in again.stdout, again.stdout + again.stderr
    runs, rows = _stored(spec)
    assert sorted(m for _, m, _ in rows) == list(MODELS) and len(set(rows)) == 3  # all three, each once
    assert runs == {run_id: "finished"}  # every result stored: the run ends as it would have
    return run_id


@pytest.fixture(scope="module")
def small_fs():
    """A 600 KB tmpfs (needs root); skipped with the reason elsewhere."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root (the store-full fault fills a 600 KB filesystem)")
    where = Path(tempfile.mkdtemp(prefix="harness-full-", dir="/var/tmp"))
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(where)], capture_output=True,
                       text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    yield where
    subprocess.run(["umount", str(where)], capture_output=True)
    where.rmdir()


@pytest.mark.parametrize("attempt", range(REPEATS))
def test_store_filesystem_full_mid_run(project, small_fs, attempt):
    for f in small_fs.iterdir():
        f.unlink()
    spec = str(small_fs / "results.sqlite")
    p = _harness(["run", "suites", "-k", "export", "--store", spec], project,
                 env={"FAULT": "full", "FILL": str(small_fs / "fill")})
    assert "the disk holding the store is full" in p.stdout + p.stderr
    (small_fs / "fill").unlink()
    _check_run(p, spec, project, marked=False)  # a full disk takes no status change either: shown abandoned


@pytest.mark.parametrize("attempt", range(REPEATS))
def test_lock_held_past_the_bound(project, attempt):
    spec = str(project / "results.sqlite")
    p = _harness(["run", "suites", "-k", "export", "--store", spec], project,
                 env={"FAULT": "lock", "STORE": spec, "HOLD": "4.5", "HARNESS_STORE_WAIT": "3"})
    out = p.stdout + p.stderr
    assert "waiting for the store: locked by another writer, 2 s (gives up after 3 s" in out, out
    assert "locked by another writer for over 3 s" in out, out
    _check_run(p, spec, project, marked=True)


@pytest.mark.parametrize("attempt", range(REPEATS))
def test_postgres_stopped_mid_run(pg_server, project, attempt):
    url = pg_server.create_database()
    try:
        p = _harness(["run", "suites", "-k", "export", "--store", url], project,
                     env={"FAULT": "pg", "PG_STOP": json.dumps(pg_server.stop_command("immediate"))})
    finally:
        pg_server.resume()
    assert f"lost the results database at 127.0.0.1:{pg_server.port}" in p.stdout + p.stderr
    _check_run(p, url, project, marked=False)  # the server was down when the run ended


def test_next_run_replays_by_itself(project):
    """No command needed: the next run into the store replays what the last one kept."""
    spec = str(project / "results.sqlite")
    p = _harness(["run", "suites", "-k", "export", "--store", spec], project,
                 env={"FAULT": "lock", "STORE": spec, "HOLD": "4.5", "HARNESS_STORE_WAIT": "3"})
    assert p.returncode == ExitCode.NOT_STORED, p.stdout + p.stderr
    p2 = _harness(["run", "suites", "-k", "export", "--store", spec], project, env={"FAULT": "none"})
    assert p2.returncode == ExitCode.OK, p2.stdout + p2.stderr
    assert "replayed 2 kept result(s) into the store (0 were there already)" in p2.stdout
    runs, rows = _stored(spec)
    assert len(runs) == 2 and set(runs.values()) == {"finished"} and len(rows) == 6 == len(set(rows))


def test_disk_full_before_any_write_says_so(project, small_fs):
    """A store whose disk is full before anything is written: exit INPUT, nothing
    measured, and the message names the full disk (not a lock)."""
    for f in small_fs.iterdir():
        f.unlink()
    fd = os.open(small_fs / "fill", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    os.close(fd)
    p = _harness(["run", "suites", "-k", "export", "--store", str(small_fs / "results.sqlite")], project, env={"FAULT": "none"})
    (small_fs / "fill").unlink()
    out = p.stdout + p.stderr
    assert p.returncode == ExitCode.INPUT, out
    assert "the disk holding the store is full" in out and "free space on that disk" in out, out
    assert "locked" not in out and "Traceback" not in out, out
