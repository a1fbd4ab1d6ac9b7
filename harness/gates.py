"""Holding a measured figure against a documented one."""

from __future__ import annotations


def hold(value: float, baseline, *, timing_scope: str | None = None) -> dict:
    """Verdict of `value` against `baseline` (a harness.baselines.Baseline).

    Returns a plain dict stored with the result: the baseline's id, figure,
    source and tolerance beside the verdict ("pass", "fail", or
    "not_comparable" when the timing scopes differ) and a reason.
    """
    src = baseline.source
    out = {
        "id": baseline.id,
        "metric": baseline.metric,
        "value": baseline.value,
        "unit": baseline.unit,
        "measured": value,
        "source": {"document": src.document, "section": src.section},
        "tolerance": baseline.tolerance.model_dump(exclude_none=True),
    }
    if baseline.timing_scope and timing_scope and baseline.timing_scope != timing_scope:
        out["verdict"] = "not_comparable"
        out["reason"] = (f"timing scope differs: measured {timing_scope}, baseline {baseline.id} is "
                         f"{baseline.timing_scope}")
        return out
    tol = 0.0
    if baseline.tolerance.abs is not None:
        tol = max(tol, baseline.tolerance.abs)
    if baseline.tolerance.rel is not None:
        tol = max(tol, baseline.tolerance.rel * abs(baseline.value))
    if baseline.direction == "higher":
        ok, limit, cmp = value >= baseline.value - tol, baseline.value - tol, ">="
    else:
        ok, limit, cmp = value <= baseline.value + tol, baseline.value + tol, "<="
    out["verdict"] = "pass" if ok else "fail"
    out["reason"] = (f"{baseline.metric} {value:.4g} {'meets' if ok else 'misses'} {cmp} {limit:.4g} "
                     f"({baseline.id} = {baseline.value:g} {baseline.unit}, {src.document} / {src.section})")
    return out


#: MLPerf inference's accuracy rule for image classification: a result passes
#: at >= 99% of the FP32 reference Top-1.
MLPERF_FRACTION = 0.99


def hold_mlperf(value: float, baseline, fraction: float = MLPERF_FRACTION) -> dict:
    """Verdict of ``value`` under MLPerf's rule (>= ``fraction`` x the reference figure)."""
    src = baseline.source
    limit = fraction * baseline.value
    ok = value >= limit
    return {
        "id": baseline.id,
        "rule": f"mlperf>={fraction:.0%}",
        "metric": baseline.metric,
        "value": baseline.value,
        "unit": baseline.unit,
        "measured": value,
        "source": {"document": src.document, "section": src.section},
        "tolerance": {"fraction": fraction},
        "verdict": "pass" if ok else "fail",
        "reason": (f"{baseline.metric} {value:.4g} {'meets' if ok else 'misses'} >= {limit:.4g} "
                   f"(MLPerf rule: {fraction:.0%} of {baseline.id} = {baseline.value:g} {baseline.unit}, "
                   f"{src.document} / {src.section})"),
    }
