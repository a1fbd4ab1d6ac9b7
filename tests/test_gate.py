"""The history gate (harness/analysis/regression.py) and `harness gate | compare`."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from report_fixtures import accuracy_result, env, latencies, make_history_store, throughput_result

from harness.cli import main
from harness.errors import UserError
from harness.analysis.regression import evaluate
from harness.analysis.thresholds import Thresholds, load_thresholds
from harness.errors import ExitCode
from harness.results.history import load_history

EXIT_PASS, EXIT_REGRESSION, EXIT_USAGE, EXIT_ERROR, EXIT_NOTHING_COMPARED = (
    ExitCode.OK, ExitCode.FAILED, ExitCode.USAGE, ExitCode.INPUT, ExitCode.NOTHING_COMPARED)
from harness.results.store import Store

SMALL = dict(models=("se_resnext50",), devices=(("cpu", "onnxruntime", "host", 12.0),
                                                 ("ascend310", "ais_bench", "device", 1000.0)), batches=(1, 8))


def gate(capsys, *args):
    rc = main(["gate", *args])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_steady_history_passes(store_spec, capsys):
    path = make_history_store(store_spec, runs=4, **SMALL)
    rc, out = gate(capsys, "--store", str(path))
    assert rc == EXIT_PASS, out
    assert "compared 5 of 5 candidate case(s)" in out and "GATE PASS" in out


def test_slow_run_is_a_regression_in_both_directions(store_spec, capsys):
    path = make_history_store(store_spec, runs=4, slow_last=1.25, **SMALL)
    rc, out = gate(capsys, "--store", str(path))
    assert rc == EXIT_REGRESSION
    # throughput down and latency up are both worse
    assert "REGRESSION  se_resnext50 throughput[cpu-onnxruntime-fp32-bs8]: throughput_ips" in out
    assert "latency_ms_p50" in out and "bad-side bound" in out and "GATE FAIL" in out
    # a per-device override can allow it
    rc, out = gate(capsys, "--store", str(path), "--threshold", "throughput_ips=30%",
                   "--threshold", "latency_ms_*=40%")
    assert rc == EXIT_PASS, out


def test_nothing_compared_fails_and_lists_both_sides(store_spec, capsys):
    path = make_history_store(store_spec, runs=1, **SMALL)
    rc, out = gate(capsys, "--store", str(path))
    assert rc == EXIT_NOTHING_COMPARED
    assert "GATE FAIL: 0 of 5 compared" in out
    assert "missing on the baseline side (5)" in out and "no clean earlier result" in out
    # a newer run that measured nothing: it hides nothing (the older run's results are still the
    # candidates, still without history) and is named on the candidate side
    store = Store(path)
    rid = store.begin_run(env(), [])
    store.finish_run(rid)
    store.close()
    rc, out = gate(capsys, "--store", str(path))
    assert rc == EXIT_NOTHING_COMPARED and "0 of 5 compared" in out
    assert "missing on the candidate side (5)" in out and f"not run in the newest run {rid}" in out


def test_interrupted_and_failed_runs_never_baseline(store_spec):
    path = make_history_store(store_spec, runs=3, interrupted=(1,), **SMALL)
    h = load_history([path])
    order = sorted(h.runs.values(), key=lambda r: r["_seq"])
    out = evaluate(h)
    assert out.comparisons
    used = {rid for c in out.comparisons for rid in c.baseline_runs}
    assert used == {order[0]["run_id"]}
    assert any("not used as baseline" in n and order[1]["run_id"] in n for n in out.notes)
    with pytest.raises(UserError, match="never used as the baseline"):
        evaluate(h, candidate_runs=[order[2]["run_id"]], baseline_runs=[order[1]["run_id"]])


def test_large_improvement_prints_notice(tmp_path, capsys):
    path = make_history_store(tmp_path / "h.sqlite", runs=3, slow_last=0.5, **SMALL)
    rc, out = gate(capsys, "--store", str(path))
    assert rc == EXIT_PASS
    assert "IMPROVEMENT" in out and "notice:" in out and "update the reference" in out


def test_results_without_repetitions_are_not_judged_and_accuracy_uses_fisher(store_spec):
    path = store_spec
    store = Store(path)
    rng = np.random.default_rng(1)
    for i, (ips, top1) in enumerate(((100.0, 79.0), (100.0, 79.0), (80.0, 75.0))):
        rid = store.begin_run(env(), [])
        r = throughput_result(rid, "xception", "cpu", "onnxruntime", "host", 8, latencies(rng, ips, 8, 30))
        for k in ("repetitions", "throughput_ci_lo", "throughput_ci_hi"):
            del r.metrics[k]  # as the first release stored them: one window, no interval
        store.add(r)
        store.add(accuracy_result(rid, "xception", top1, 94.0, n=5000))
        store.finish_run(rid)
    store.close()
    out = evaluate(load_history([path]))
    tests = {c.metric: c for c in out.comparisons}
    # a 20% drop with no run-level interval is reported, never judged on per-iteration samples,
    # and never passes either: it could not have been seen
    assert tests["throughput_ips"].verdict == "inconclusive" and "not judged" in tests["throughput_ips"].reason
    assert tests["top1"].test == "fisher" and tests["top1"].verdict == "regression"
    assert tests["top5"].verdict == "unchanged"


def test_thresholds_wildcards_and_files(tmp_path):
    th = Thresholds()
    th.add_spec("throughput_ips:*:ascend*=3%")
    th.add_spec("top1:xception=0.5")
    assert th.resolve("throughput_ips", "se_resnext50", "ascend310p")["rel"] == pytest.approx(0.03)
    assert th.resolve("throughput_ips", "se_resnext50", "cpu")["rel"] == pytest.approx(0.05)
    assert th.resolve("top1", "xception", "cpu")["abs"] == 0.5
    assert th.resolve("latency_ms_p99", "x", "cpu")["rel"] == pytest.approx(0.05)
    f = tmp_path / "gate.yaml"
    f.write_text("schema_version: 1\nalpha: 0.001\nrules:\n  - {metric: throughput_ips, device: gpu, rel: 0.1}\n")
    th = load_thresholds(f)
    assert th.alpha == 0.001 and th.resolve("throughput_ips", "m", "gpu")["rel"] == 0.1
    f.write_text("rules: []\n")
    with pytest.raises(UserError, match="gate.yaml.*schema_version"):
        load_thresholds(f)
    with pytest.raises(UserError, match="bad --threshold"):
        Thresholds().add_spec("throughput_ips")


def test_compare_two_runs(store_spec, tmp_path, capsys):
    path = make_history_store(store_spec, runs=3, slow_last=1.3, **SMALL)
    ids = [r["run_id"] for r in sorted(load_history([path]).runs.values(), key=lambda r: r["_seq"])]
    assert main(["compare", ids[0], ids[1], "--store", str(path)]) == EXIT_PASS
    assert main(["compare", ids[0], ids[2][:-2], "--store", str(path), "--json", str(tmp_path / "o.json")]) \
        == EXIT_REGRESSION
    assert '"verdict": "fail"' in (tmp_path / "o.json").read_text()
    assert main(["compare", "--list", "--store", str(path)]) == 0
    capsys.readouterr()
    assert main(["compare", ids[0], "--store", str(path)]) == EXIT_USAGE
    assert "needs two runs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["gate", "--history", "many"])
    assert exc.value.code == EXIT_USAGE


@pytest.mark.parametrize("kind", ["garbage", "foreign_sqlite", "newer"])
def test_bad_store_is_named_and_untouched(tmp_path, capsys, kind):
    path = tmp_path / "s.sqlite"
    if kind == "garbage":
        path.write_bytes(b"not a database at all\n" * 10)
    elif kind == "foreign_sqlite":
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE songs (title TEXT)")
        db.commit()
        db.close()
    else:
        make_history_store(path, runs=1, **SMALL)
        db = sqlite3.connect(path)
        db.execute("UPDATE meta SET value='99' WHERE key='format_version'")
        db.commit()
        db.close()
    before = path.read_bytes()
    for args in (["gate", "--store", str(path)], ["report", "--store", str(path), "--out", str(tmp_path / "r.html")],
                 ["export", "--store", str(path), "--out", str(tmp_path / "x.json")]):
        assert main(args) == EXIT_ERROR
        err = capsys.readouterr().err
        assert str(path) in err and ("not a results store" in err or "format version 99" in err)
    assert path.read_bytes() == before
    assert not (tmp_path / "r.html").exists()
