"""The gate says PASS only when it could have seen the regression (issue 22).

Stores here are hand-made by a seeded generator (tests/report_fixtures.py):
their figures are test inputs, never shown as measurements."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from harness.analysis import pooled
from harness.analysis.claims import evaluate_claims
from harness.analysis.gate_outcome import format_outcome
from harness.analysis.regression import evaluate
from harness.cli import main
from harness.cli import remeasure as rm
from harness.config.baselines import load_baselines
from harness.errors import ExitCode
from harness.results import Result
from harness.results.history import load_history
from harness.results.store import Store
from tests.report_fixtures import env, throughput_result
from tests.test_gate_history import run_series

CASE = "throughput[cpu-onnxruntime-fp32-bs8]"
REPO = Path(__file__).resolve().parents[1]


def gate(capsys, *args):
    rc = main(["gate", *args])
    out = capsys.readouterr()
    return rc, out.out + out.err


def est(value, hw, reps=6):
    """A run estimate with a relative half-width `hw` (order-statistic interval)."""
    return pooled.run_estimate(value, value * math.exp(-hw), value * math.exp(hw), reps, "order")


# -- the rule ------------------------------------------------------------------
def test_rule_pass_regression_inconclusive():
    ref = [est(100, 0.01), est(101, 0.01), est(99, 0.01)]
    up = lambda ch: pooled.decide(ch, 0.05, higher_is_better=True)  # noqa: E731
    # a tight candidate near the reference: its bad-side bound is inside -5%
    ch = pooled.pooled_change(ref, [est(99.5, 0.01)])
    assert up(ch) == "unchanged" and pooled.bad_bound(ch, True) > -0.05
    # 17% slower, tight: the interval excludes 0 and the change is past 5%
    ch = pooled.pooled_change(ref, [est(83, 0.01)])
    assert up(ch) == "regression" and ch.hi < 0 and ch.rel < -0.05
    # the same point estimate as the pass above, but a wide candidate: never a pass
    ch = pooled.pooled_change(ref, [est(99.5, 0.20)])
    assert up(ch) == "inconclusive" and pooled.bad_bound(ch, True) < -0.05
    need = pooled.needed(ch, 0.05, True)
    assert need.more_reps and re.search(r"needs ±\d+\.\d%: about \d+ more repetitions", need.text), need.text
    # latency: higher is worse, the bad side is the upper bound
    ch = pooled.pooled_change(ref, [est(120, 0.01)])
    assert pooled.decide(ch, 0.05, higher_is_better=False) == "regression"
    assert pooled.decide(ch, 0.05, higher_is_better=True) == "improvement"


def test_between_run_spread_widens_the_interval_and_all_runs_count():
    tight = [est(100, 0.005), est(100.2, 0.005), est(99.9, 0.005)]
    spread = [est(100, 0.005), est(106, 0.005), est(94, 0.005)]  # runs disagree far more than their intervals
    a = pooled.pooled_change(tight, [est(97, 0.005)])
    b = pooled.pooled_change(spread, [est(97, 0.005)])
    assert b.tau > 0.04 and b.tau_df == 2 and (b.hi - b.lo) > 4 * (a.hi - a.lo)
    # the reference is the mean of every run, not the newest one
    assert b.ref_level == pytest.approx(math.exp(np.mean(np.log([100, 106, 94]))))
    # one run each side: the between-run spread is unknown, and said to be
    assert pooled.pooled_change([est(100, 0.01)], [est(99, 0.01)]).within_only


# -- the gate ------------------------------------------------------------------
def test_wide_candidate_is_inconclusive_not_pass(tmp_path, capsys):
    path = tmp_path / "h.sqlite"
    run_series(path, [100.0, 100.0, 100.0], noise=0.01)
    # the candidate's point estimate is near the reference, but its repetitions disagree widely
    store = Store(path)
    rid = store.begin_run(env(), [])
    lat = np.concatenate([np.full(10, 8 / v) for v in (86.0, 99.0, 117.0)])
    store.add(throughput_result(rid, "efficientnet_b0", "cpu", "onnxruntime", "host", 8, lat))
    store.finish_run(rid)
    store.close()
    rc, out = gate(capsys, "--store", str(path), "--metric", "throughput_ips")
    assert rc == ExitCode.INCONCLUSIVE, out
    assert "GATE PASS" not in out and "INCONCLUSIVE" in out and "needs ±" in out
    (c,) = evaluate(load_history([path]), metrics=["throughput_ips"]).comparisons
    assert c.verdict == "inconclusive" and abs(c.change) < 0.05 and c.bad_bound < -0.05


def _bounds(out: str) -> list[tuple[str, float]]:
    return [(m.group(1), float(m.group(2)) / 100)
            for m in re.finditer(r"^  (\w+)\s+\S+ \S+: throughput_ips .*?bad-side bound ([+-]\d+\.\d)%", out, re.M)]


@pytest.mark.parametrize("seed", range(6))
def test_pass_only_where_the_printed_bad_side_bound_is_inside_the_threshold(tmp_path, capsys, seed):
    rng = np.random.default_rng(seed)
    path = tmp_path / "h.sqlite"
    n = int(rng.integers(1, 8))
    levels = [100.0] * n + [100.0 * (1 - float(rng.uniform(0, 0.2)))]
    run_series(path, levels, noise=float(rng.uniform(0.005, 0.3)), run_noise=float(rng.uniform(0, 0.04)), seed=seed)
    rc, out = gate(capsys, "--store", str(path), "--metric", "throughput_ips", "-v")
    (label, bound), = _bounds(out)
    if label == "PASS":
        assert bound > -0.05 and rc == ExitCode.OK, out
    if bound <= -0.05:
        assert label in ("REGRESSION", "INCONCLUSIVE") and rc != ExitCode.OK, out


def test_skipped_only_newest_run_does_not_mask_a_regression(tmp_path, capsys):
    path = tmp_path / "h.sqlite"
    ids = run_series(path, [100.0, 100.0, 100.0, 80.0])
    store = Store(path)
    rid = store.begin_run(env(), ["suites"])
    store.add(Result(model="efficientnet_b0", case=CASE, stage="throughput", status="skipped", device="cpu",
                     reason="onnxruntime not installed", run_id=rid))
    store.finish_run(rid)
    store.close()
    rc, out = gate(capsys, "--store", str(path))
    assert rc == ExitCode.FAILED, out
    assert "REGRESSION" in out and ids[3] in out
    assert f"skipped (onnxruntime not installed) in the newest run {rid}" in out
    # a newer clean run at the old level is the candidate again, judged against history without the regressed one
    run_series(path, [100.0], seed=3)
    rc, out = gate(capsys, "--store", str(path), "--metric", "throughput_ips")
    assert "skipped" not in out and rc != ExitCode.FAILED


def test_newest_run_that_measured_nothing_is_not_a_pass(tmp_path, capsys):
    path = tmp_path / "h.sqlite"
    run_series(path, [100.0, 100.0, 100.0, 100.0])
    store = Store(path)
    rid = store.begin_run(env(), [])
    store.add(Result(model="efficientnet_b0", case=CASE, stage="throughput", status="skipped", device="cpu",
                     reason="filtered", run_id=rid))
    store.finish_run(rid)
    store.close()
    rc, out = gate(capsys, "--store", str(path), "--metric", "throughput_ips")
    assert rc in (ExitCode.NOTHING_COMPARED, ExitCode.INCONCLUSIVE) and "GATE PASS" not in out, out


def test_contended_candidate_and_the_rounds_of_remeasure(tmp_path, capsys, monkeypatch):
    """--remeasure: the contended candidate is measured again (here the round stores a
    run the way `harness run` would: a fake of the subprocess, not of the gate), the
    new run joins the candidate, and the gate decides."""
    path = tmp_path / "h.sqlite"
    suite = tmp_path / "s" / "suite.yaml"
    suite.parent.mkdir()
    (tmp_path / "s" / "m.onnx").write_bytes(b"not read: the round below is a fake")
    suite.write_text("model: efficientnet_b0\nsource: {kind: onnx, path: m.onnx, num_classes: 10}\n"
                     "input: {size: 224, preprocess: imagenet_resize256_crop224}\ntargets:\n"
                     "  - {name: cpu-onnxruntime-fp32, device: cpu, runner: onnxruntime, format: onnx, "
                     "batch_sizes: [8], stages: [throughput]}\n")
    run_series(path, [100.0, 100.0, 100.0], run_noise=0.005)
    store = Store(path)
    rid = store.begin_run(env(), [str(suite), "-q"])
    lat = (8 / 55.0) * np.ones(30)
    store.add(throughput_result(rid, "efficientnet_b0", "cpu", "onnxruntime", "host", 8, lat,
                                contended=[True, True, True]))
    store.finish_run(rid)
    store.close()
    calls = []

    def fake_round(ids, store_spec, timeout_s):
        calls.append(ids)
        s = Store(store_spec)
        r2 = s.begin_run(env(), ["remeasure"])
        rng = np.random.default_rng(len(calls))
        s.add(throughput_result(r2, "efficientnet_b0", "cpu", "onnxruntime", "host", 8,
                                (8 / 100.0) * np.exp(rng.normal(0, 0.01, 30))))
        s.finish_run(r2)
        s.close()
        return 0

    monkeypatch.setattr(rm, "run_round", fake_round)
    monkeypatch.setattr(rm, "this_host", lambda: env()["hostname"])
    rc, out = gate(capsys, "--store", str(path), "--metric", "throughput_ips")
    assert rc == ExitCode.INCONCLUSIVE and "contended" in out
    rc, out = gate(capsys, "--store", str(path), "--metric", "throughput_ips", "--remeasure=60")
    assert calls and calls[0] == [f"{suite}::{CASE}"]
    assert rc == ExitCode.OK and "GATE PASS" in out and "pooled with their candidates" in out, out


def test_node_ids_from_the_runs_command_line(tmp_path):
    ids, lost = rm.node_ids({"argv": [str(REPO / "suites"), "-m", "cpu"]},
                            {("efficientnet_b0", "throughput[cpu-onnxruntime-bs8]"), ("nope", "x")})
    assert lost == ["nope x"]
    assert ids == [f"{REPO / 'suites' / 'efficientnet_b0' / 'suite.yaml'}::throughput[cpu-onnxruntime-bs8]"]


# -- claims --------------------------------------------------------------------
def _r(device, bs, ips, *, contended=False):
    return Result(model="se_resnext50", case=f"throughput[{device}-bs{bs}]", stage="throughput", status="passed",
                  device=device, runner="ais_bench", batch_size=bs, timing_scope="device",
                  artifact_sha256=f"om-{device}-{bs}", preprocessing="imagenet_resize256_crop224", run_id="r",
                  metrics={"throughput_ips": ips, "source_sha256": "onnx1", "contended": contended})


def test_claims_skip_contended_and_unmeasured_devices_go_to_verbose():
    bf = load_baselines(REPO / "baselines.yaml")
    claim = bf.by_id("se_resnext50.claim.310p_vs_310.best_batch")
    ok = [_r("ascend310", 16, 150.0), _r("ascend310p", 4, 200.0)]
    (v,) = evaluate_claims(ok, [claim])
    assert v.verdict == "pass"
    # a contended 310P figure says nothing of the device
    (v,) = evaluate_claims([ok[0], _r("ascend310p", 4, 100.0, contended=True)], [claim], {"ascend310", "ascend310p"})
    assert v.verdict == "missing" and not v.unmeasured
    (v,) = evaluate_claims([ok[0]], [claim], {"ascend310", "cpu"})
    assert v.verdict == "missing" and v.unmeasured
    from harness.analysis.gate_outcome import GateOutcome

    out = GateOutcome([], [], [], [], claims=[v])
    assert "CLAIM MISSING" not in format_outcome(out) and "1 claim(s) need devices this store lacks" in \
        format_outcome(out)
    assert "CLAIM MISSING" in format_outcome(out, verbose=True)



def test_report_history_row_says_inconclusive_not_pass():
    """The HTML report's history row follows the gate: an undecided comparison is no PASS."""
    from harness.analysis.gate_outcome import Comparison, GateOutcome
    from harness.reports.views import gate_rows

    def comp(verdict):
        return Comparison(model="m", case="throughput[cpu-onnxruntime-bs8]", device="cpu", metric="throughput",
                          direction="higher", baseline=100.0, candidate=97.0, change=-0.03, threshold="5%",
                          test="pooled t", p_value=None, verdict=verdict, reason="change -3.0%",
                          need="needs ±2.1%: about 9 more repetitions" if verdict == "inconclusive" else "")

    out = GateOutcome(comparisons=[comp("unchanged"), comp("inconclusive")], missing_baseline=[],
                      missing_candidate=[], candidate_runs=["r1"])
    row = next(r for r in gate_rows("m", [], out, [], None) if r["gate"] == "history (regressions)")
    assert row["verdict"] == "inconclusive" and "needs ±2.1%" in row["reason"]
    out.comparisons = [comp("unchanged")]
    row = next(r for r in gate_rows("m", [], out, [], None) if r["gate"] == "history (regressions)")
    assert row["verdict"] == "pass"
