import numpy as np
import pytest

from harness.analysis.changepoints import Point, compare_runs, detect_changes
from harness.metrics.repetitions import RepeatResult

OLD = {"artifact_sha256": "9f" * 32, "onnxruntime": "1.31.0"}
NEW = {"artifact_sha256": "a3" * 32, "onnxruntime": "1.32.0"}


def series(values, *, new_from=None, contended=(), hw=0.015):
    return [Point(v, v * (1 - hw), v * (1 + hw), i in contended,
                  NEW if new_from is not None and i >= new_from else OLD, f"run{i:02d}")
            for i, v in enumerate(values)]


def noisy(n, seed, sigma=0.015, level=100.0):
    return level * np.exp(np.random.default_rng(seed).normal(0, sigma, n))


@pytest.mark.parametrize("seed", range(5))
def test_detects_a_regression_with_its_size_and_suspects(seed):
    v = noisy(24, seed)
    v[14:] *= 0.90
    a = detect_changes(series(v, new_from=14))
    assert a.status == "ok" and len(a.change_points) == 1
    cp = a.newest
    assert cp.index == 14 and cp.run_id == "run14" and cp.direction == "regression"
    assert cp.rel_ci[0] < cp.rel_change < cp.rel_ci[1]
    assert cp.rel_ci[0] <= -0.10 <= cp.rel_ci[1]
    assert cp.suspects == ["artifact_sha256 changed", "onnxruntime 1.31.0 -> 1.32.0"]
    assert cp.suspects_text == "artifact_sha256 changed; onnxruntime 1.31.0 -> 1.32.0"


@pytest.mark.parametrize("seed", range(20))
def test_no_change_no_alarm(seed):
    a = detect_changes(series(noisy(30, 1000 + seed)))
    assert a.change_points == [] and a.tail is None and a.verdict() == "unchanged"


def test_direction_and_several_change_points():
    v = noisy(30, 7)
    v[10:20] *= 1.15  # faster, then back
    a = detect_changes(series(v))
    assert [(c.index, c.direction) for c in a.change_points] == [(10, "improvement"), (20, "regression")]
    lat = 1000.0 / v  # the same runs as latency: lower is better
    b = detect_changes(series(lat), direction="lower")
    assert [(c.index, c.direction) for c in b.change_points] == [(10, "improvement"), (20, "regression")]


def test_threshold_filters_small_real_steps():
    v = noisy(24, 3, sigma=0.003)
    v[12:] *= 0.97  # real, significant, but under 5%
    pts = series(v, hw=0.004)
    assert detect_changes(pts).change_points == []
    got = detect_changes(pts, rel_threshold=0.02).change_points
    assert [c.index for c in got] == [12]


def test_contended_runs_are_skipped_but_their_versions_are_not_lost():
    v = noisy(20, 11)
    v[8] *= 0.5  # a neighbour halved this run; the probe flagged it
    a = detect_changes(series(v, contended={8}))
    assert a.skipped == [8] and a.change_points == [] and a.verdict() == "unchanged"
    v[8:] *= 0.9  # now a real step that began on the contended run 8
    a = detect_changes(series(v, new_from=8, contended={8}))
    (cp,) = a.change_points
    assert cp.index == 9 and "onnxruntime 1.31.0 -> 1.32.0" in cp.suspects


def test_short_history_says_how_many_runs_are_missing():
    a = detect_changes(series(noisy(5, 1), contended={1}))
    assert a.status == "insufficient_history" and a.needed == 2
    assert a.verdict() == "insufficient_history" and "2 more run(s)" in a.message
    assert detect_changes([]).needed == 6


def test_newest_step_is_suspected_then_confirmed():
    v = noisy(20, 5)
    v[-1] *= 0.85
    a = detect_changes(series(v, new_from=19))
    assert a.verdict() == "suspected_regression" and a.change_points == []
    assert a.tail.index == 19 and a.tail.runs_to_confirm == 2 and not a.tail.confirmed
    w = np.r_[v, noisy(2, 6) * 0.85]
    a = detect_changes(series(w, new_from=19))
    assert a.verdict() == "regression" and a.newest.index == 19 and a.newest.confirmed
    assert a.newest.suspects == ["artifact_sha256 changed", "onnxruntime 1.31.0 -> 1.32.0"]


def test_newest_run_contended_is_not_judged():
    a = detect_changes(series(noisy(12, 2), contended={11}))
    assert a.verdict() == "contended"


def test_compare_runs_uses_run_level_intervals():
    a = [100.0, 100.8, 99.5, 100.3, 99.9, 100.1]
    assert compare_runs(a, [90.0, 90.5, 89.6, 90.2, 89.9, 90.4]).verdict == "regression"
    assert compare_runs(a, [110.0, 110.5, 109.6, 110.2]).verdict == "improvement"
    assert compare_runs(a, [90.0, 90.5, 89.6], direction="lower").verdict == "improvement"
    # 2% apart with tight intervals: real but below the 5% threshold
    c = compare_runs(a, [98.0, 98.1, 97.9, 98.05, 97.95, 98.0])
    assert c.verdict == "unchanged" and "threshold" in c.reason
    # 6% apart on the medians, but one rep each way makes the intervals overlap
    c = compare_runs([100.0, 100.2, 99.8, 100.1, 99.9, 93.0], [94.0, 94.2, 93.8, 94.1, 100.0, 94.0])
    assert c.verdict == "unchanged" and "overlap" in c.reason
    c = compare_runs(a, [90.0, 90.5, 89.6, 90.2, 89.9, 90.4])
    lo, hi = c.rel_ci
    assert lo < c.rel_change < hi < -0.05  # the ratio's interval excludes 0: the intervals are apart


def test_compare_runs_refuses_contended_results():
    from harness.metrics.repetitions import Rep

    clean = RepeatResult(100, 99, 101, 0.01, [Rep(v, {}, None, False, True, 1.0) for v in (99, 100, 101)],
                         0, 0, False, "precision", "t-log", 3.0)
    busy = RepeatResult(60, 55, 65, 0.08, [Rep(v, {}, None, True, True, 1.0) for v in (55, 60, 65)],
                        3, 0, True, "max_reps", "t-log", 3.0, basis="kept")
    c = compare_runs(clean, busy)
    assert c.verdict == "contended" and "B" in c.reason
    assert compare_runs(clean, clean).verdict == "unchanged"
