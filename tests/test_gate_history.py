"""The gate follows one benchmark key across versions (issue 15): key / version /
machine kept apart, change points over run-level estimates, contention never
judged, stores of the first release still loading."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.analysis.regression import evaluate
from harness.cli import main
from harness.errors import ExitCode
from harness.results.history import load_history
from harness.results.identity import benchmark_key, machine_class, version_of
from harness.results.store import Store
from tests.report_fixtures import env, throughput_result

FIXTURES = Path(__file__).parent / "fixtures" / "stores"


def run_series(path, levels, *, noise=0.01, run_noise=0.0, seed=0, sha=lambda i: "ab" * 32,
               runner_version=lambda i: "1.31.0", contended=lambda i: None, host_env=lambda i: env(), reps=3):
    """One run per level: a throughput result at `level` img/s (3 repetitions of
    10 iterations), its artifact and runner version per run as given."""
    rng = np.random.default_rng(seed)
    store = Store(path)
    ids = []
    for i, level in enumerate(levels):
        rid = store.begin_run(host_env(i), [])
        level = level * float(np.exp(rng.normal(0, run_noise)))
        lat = (8 / level) * np.exp(rng.normal(0, noise, 10 * reps))
        store.add(throughput_result(rid, "efficientnet_b0", "cpu", "onnxruntime", "host", 8, lat, sha=sha(i),
                                    runner_version=runner_version(i), reps=reps, contended=contended(i)))
        store.finish_run(rid)
        ids.append(rid)
    store.close()
    return ids


def gate(capsys, *args):
    rc = main(["gate", *args])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_key_version_machine_are_kept_apart():
    r = throughput_result("r1", "m", "cpu", "onnxruntime", "host", 8, [0.01] * 9)
    key = benchmark_key(r)
    assert key == {"model": "m", "stage": "throughput", "case": "throughput[cpu-onnxruntime-fp32-bs8]",
                   "device": "cpu", "batch_size": 8, "precision": "fp32", "timing_scope": "host", "input_size": 224,
                   "scenario": "harness"}  # stored before scenarios: the harness's own loop
    assert "artifact_sha256" not in key and "runner_version" not in key
    v = version_of(r, {**env(), "frameworks": {"onnxruntime": "1.31.0"}})
    assert v["artifact_sha256"] == "ab" * 32 and v["onnxruntime"] == "1.31.0" and v["git_commit"]
    assert machine_class(env()) == machine_class(env("another-host"))  # same hardware, another name
    assert machine_class(env()) != machine_class({**env(), "cpu_model": "Other CPU"})


def test_new_artifact_and_runtime_are_compared_and_named_as_suspects(tmp_path, capsys):
    path = tmp_path / "h.sqlite"
    run_series(path, [100.0, 100.0, 100.0, 88.0], sha=lambda i: ("cd" if i == 3 else "ab") * 32,
               runner_version=lambda i: "1.32.0" if i == 3 else "1.31.0")
    rc, out = gate(capsys, "--store", str(path))
    assert rc == ExitCode.FAILED, out
    assert "compared 1 of 1" in out and "REGRESSION" in out
    assert "artifact_sha256 changed" in out and "runner_version 1.31.0 -> 1.32.0" in out
    assert "change-point detection needs 2 more clean run(s)" in out  # 4 runs; detection wants 6


def test_a_new_version_at_the_same_speed_passes(tmp_path, capsys):
    path = tmp_path / "h.sqlite"
    run_series(path, [100.0, 100.0, 100.5], sha=lambda i: ("cd" if i == 2 else "ab") * 32)
    rc, out = gate(capsys, "--store", str(path))
    assert rc == ExitCode.OK and "GATE PASS" in out, out


def test_change_point_found_over_history_with_its_run_and_suspects(tmp_path):
    path = tmp_path / "h.sqlite"
    # 8 steady runs, then the model changed: 3 runs 12% slower, the newest included
    ids = run_series(path, [100.0] * 8 + [88.0] * 3, run_noise=0.01,
                     sha=lambda i: ("cd" if i >= 8 else "ab") * 32)
    out = evaluate(load_history([path]))
    (c,) = [c for c in out.comparisons if c.metric == "throughput_ips"]
    assert c.verdict == "regression" and c.change_run == ids[8], c.reason
    assert c.change == pytest.approx(-0.12, abs=0.03) and c.change_ci[1] < 0
    assert c.suspects == ["artifact_sha256 changed"] and "change points over 11 clean run(s)" in c.test


def test_newest_run_alone_slower_is_flagged_and_said_to_need_confirmation(tmp_path):
    path = tmp_path / "h.sqlite"
    ids = run_series(path, [100.0] * 8 + [88.0], run_noise=0.01, sha=lambda i: ("cd" if i == 8 else "ab") * 32)
    out = evaluate(load_history([path]))
    (c,) = [c for c in out.comparisons if c.metric == "throughput_ips"]
    assert c.verdict == "regression" and c.change_run == ids[8]
    assert "rerun to confirm" in c.reason and out.exit_code == ExitCode.FAILED


def test_run_to_run_noise_within_its_intervals_is_not_a_regression(tmp_path):
    path = tmp_path / "h.sqlite"
    run_series(path, [100.0] * 12, run_noise=0.015, noise=0.02, seed=3)
    out = evaluate(load_history([path]))
    # never a false regression; a candidate whose interval reaches past -5% is inconclusive, not a pass
    assert out.exit_code in (ExitCode.OK, ExitCode.INCONCLUSIVE) and not out.regressions, \
        [c.reason for c in out.comparisons]
    assert all(c.verdict == "inconclusive" or c.bad_bound > -0.05 for c in out.comparisons)


def test_contended_candidate_is_inconclusive_and_never_a_reference(tmp_path, capsys):
    path = tmp_path / "h.sqlite"
    # the last run was measured beside a busy neighbour: slow, and marked so
    run_series(path, [100.0, 100.0, 100.0, 55.0], contended=lambda i: [True, True, True] if i == 3 else None)
    rc, out = gate(capsys, "--store", str(path))
    assert rc == ExitCode.INCONCLUSIVE, out
    assert "INCONCLUSIVE" in out and "contended" in out and "GATE INCONCLUSIVE" in out
    # a later clean run is judged against the clean history, not against the contended one
    run_series(path, [100.0])
    rc, out = gate(capsys, "--store", str(path))
    assert rc == ExitCode.OK, out
    assert "contended results are never a reference" in out


def test_other_machine_class_is_never_the_reference(tmp_path, capsys):
    path = tmp_path / "h.sqlite"
    run_series(path, [100.0, 100.0, 60.0],
               host_env=lambda i: {**env(), "cpu_model": "Slow CPU"} if i == 2 else env())
    rc, out = gate(capsys, "--store", str(path))
    assert rc == ExitCode.NOTHING_COMPARED
    assert "another machine class" in out


def test_unknown_metric_in_thresholds_is_an_error_naming_it(tmp_path, capsys):
    path = tmp_path / "h.sqlite"
    run_series(path, [100.0, 100.0])
    rc, out = gate(capsys, "--store", str(path), "--threshold", "thruput_ips=3%")
    assert rc == ExitCode.INPUT and "'thruput_ips' names no metric" in out
    f = tmp_path / "t.yaml"
    f.write_text("schema_version: 1\nrules:\n  - {metric: top_1, abs: 0.5}\n")
    rc, out = gate(capsys, "--store", str(path), "--thresholds", str(f))
    assert rc == ExitCode.INPUT and "'top_1'" in out and str(f) in out


def test_store_of_the_first_release_loads_and_gates(tmp_path, capsys):
    old = tmp_path / "old.sqlite"
    shutil.copy(FIXTURES / "release-0.1.0.sqlite", old)
    before = old.read_bytes()
    h = load_history([old])
    assert len(h.runs) == 3 and {r.stage for r in h.results} == {"export", "throughput"}
    rc, out = gate(capsys, "--store", str(old))
    # its results carry no repetitions: reported, never judged on per-iteration samples, never a pass
    assert rc == ExitCode.INCONCLUSIVE and "compared 2 of 2" in out and "no run-level interval" in out, out
    assert old.read_bytes() == before  # read-only
    assert main(["report", "--store", str(old), "--out", str(tmp_path / "r.html")]) == ExitCode.OK
    # and a new release's run goes on into the same store, followed across the format change
    run_series(old, [1e6])
    assert len(load_history([old]).runs) == 4
