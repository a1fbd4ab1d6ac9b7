"""Holding a measured figure against a documented one: the typed verdict.

A :class:`Verdict` is stored with its result as a plain dict (one dict, or
``{"all": [...]}`` for several: the shape stores written by the first release
hold, so they keep loading). :func:`verdicts_of` is the one reader of that
field; :func:`pack` the one writer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from harness.analysis import comparability
from harness.analysis.comparability import Identity

#: MLPerf inference's accuracy rule for image classification: a result passes
#: at >= 99% of the FP32 reference Top-1.
MLPERF_FRACTION = 0.99
VERDICTS = ("pass", "fail", "not_comparable")


@dataclass
class Verdict:
    id: str
    metric: str
    value: float  # the documented figure
    unit: str
    measured: float
    verdict: str  # one of VERDICTS
    reason: str
    source: dict = field(default_factory=dict)  # {"document": ..., "section": ...}
    tolerance: dict = field(default_factory=dict)
    rule: str | None = None  # "mlperf>=99%" for MLPerf's rule; None: the baseline's own tolerance

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if not (k == "rule" and v is None)}

    @classmethod
    def from_dict(cls, d: dict) -> "Verdict":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def failed(self) -> bool:
        return self.verdict == "fail"


def verdicts_of(stored: dict | None) -> list[Verdict]:
    """The verdicts in a result's ``baseline`` field, whichever shape it was stored in."""
    if not stored:
        return []
    items = stored["all"] if "all" in stored else [stored]
    return [Verdict.from_dict(v) for v in items]


def pack(verdicts: list[Verdict]) -> dict | None:
    """The stored form of a list of verdicts (see the module docstring)."""
    if not verdicts:
        return None
    if len(verdicts) == 1:
        return verdicts[0].to_dict()
    return {"all": [v.to_dict() for v in verdicts]}


def _common(value: float, baseline) -> dict:
    src = baseline.source
    return {"id": baseline.id, "metric": baseline.metric, "value": baseline.value, "unit": baseline.unit,
            "measured": value, "source": {"document": src.document, "section": src.section}}


def _measured_side(baseline, timing_scope, identity) -> Identity:
    """The measured figure's identity; without one, only the timing scope is
    known (a field the caller does not know is taken from the baseline)."""
    if identity is not None:
        return identity
    b = comparability.identity(baseline)
    return Identity("measured", timing_scope or b.timing_scope, b.model_artifact, b.preprocessing)


def hold(value: float, baseline, *, timing_scope: str | None = None, identity: Identity | None = None) -> Verdict:
    """Verdict of ``value`` against ``baseline`` (a :class:`harness.config.baselines.Baseline`)
    under the baseline's own tolerance; "not_comparable" (naming the field) when
    `harness.analysis.comparability.comparable` says the two measure different
    things. `identity` describes the measured figure (weights, preprocessing,
    scope); without it only `timing_scope` is compared."""
    common = _common(value, baseline)
    tolerance = baseline.tolerance.model_dump(exclude_none=True)
    ok, why = comparability.comparable(_measured_side(baseline, timing_scope, identity), baseline)
    if not ok:
        return Verdict(**common, tolerance=tolerance, verdict="not_comparable",
                       reason=f"not comparable with {baseline.id}: measured vs baseline differ in {why}")
    tol = baseline.tolerance.slack(baseline.value)
    if baseline.direction == "higher":
        ok, limit, cmp = value >= baseline.value - tol, baseline.value - tol, ">="
    else:
        ok, limit, cmp = value <= baseline.value + tol, baseline.value + tol, "<="
    src = baseline.source
    return Verdict(**common, tolerance=tolerance, verdict="pass" if ok else "fail",
                   reason=f"{baseline.metric} {value:.4g} {'meets' if ok else 'misses'} {cmp} {limit:.4g} "
                          f"({baseline.id} = {baseline.value:g} {baseline.unit}, {src.document} / {src.section})"
                          + (f"; {why}" if why else ""))


def hold_mlperf(value: float, baseline, fraction: float = MLPERF_FRACTION) -> Verdict:
    """Verdict of ``value`` under MLPerf's rule (>= ``fraction`` x the reference figure)."""
    src = baseline.source
    limit = fraction * baseline.value
    ok = value >= limit
    return Verdict(**_common(value, baseline), rule=f"mlperf>={fraction:.0%}", tolerance={"fraction": fraction},
                   verdict="pass" if ok else "fail",
                   reason=(f"{baseline.metric} {value:.4g} {'meets' if ok else 'misses'} >= {limit:.4g} "
                           f"(MLPerf rule: {fraction:.0%} of {baseline.id} = {baseline.value:g} {baseline.unit}, "
                           f"{src.document} / {src.section})"))


def hold_by_rule(value: float, baseline, rule: str, *, timing_scope: str | None = None,
                 identity: Identity | None = None) -> list[Verdict]:
    """``rule``: "tolerance" (the baseline's own), "mlperf", or "both". Both
    rules apply only where the figures are comparable (see `hold`)."""
    out = []
    if rule in ("tolerance", "both"):
        out.append(hold(value, baseline, timing_scope=timing_scope, identity=identity))
    if rule in ("mlperf", "both"):
        first = out[0] if out else hold(value, baseline, timing_scope=timing_scope, identity=identity)
        out.append(hold_mlperf(value, baseline) if first.verdict != "not_comparable" else
                   Verdict(**{**first.to_dict(), "rule": f"mlperf>={MLPERF_FRACTION:.0%}"}))
    return out
