"""Cross-device claims ("310P best-batch throughput >= 1.2x the 310's").

A claim compares two device families' throughput, each at its own best batch
(or at one named batch size). The figures usually come from different hosts
(a 310 box, a 310P box, a GPU box) merged into one store. Two figures are
compared only when `harness.analysis.comparability.comparable` says so (the
same timing scope, model and preprocessing; never a null-runner figure).
Otherwise the verdict is "not_comparable" and the reason names what
differs; a verdict resting on an assumed field says so in its reason.

`evaluate_published` holds the documents' own tables (baselines.yaml)
against their own claims, and `table_outliers` flags cells far below both
neighbours in a table row (the 310P's bs32 600.3 between 1396.36 and
1198.41).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from harness.analysis import comparability as cmp
from harness.config.baselines import BaselinesFile, Claim
from harness.results import Result

VERDICTS = ("pass", "fail", "not_comparable", "missing")


@dataclass
class ClaimVerdict:
    claim_id: str
    model: str
    numerator: str
    denominator: str
    at: str | int
    min_ratio: float
    ratio: float | None
    numerator_value: float | None
    denominator_value: float | None
    numerator_batch: int | None
    denominator_batch: int | None
    verdict: str  # "pass" | "fail" | "not_comparable" | "missing"
    reason: str
    source: dict  # {document, section}
    origin: str  # "measured" or "published"
    # "missing" because the store never measured one of its devices at all (not
    # just not in this run): a CPU-only nightly says so once, not per claim
    unmeasured: bool = False


# A choice, not a published figure: a cell is an outlier when it is below 60%
# of both neighbours, a drop four times wider than the 10% run-to-run band the
# throughput baselines allow (baselines.yaml). In the documents' tables the one
# such cell (310P bs32, 600.3) is at 0.50 of its larger neighbour; every other
# interior cell is at 1.04 or more, so anything from about 0.55 to 1.0 splits
# them the same way; 0.6 leaves room on both sides.
OUTLIER_FACTOR = 0.6


def table_outliers(values: dict[int, float], *, factor: float = OUTLIER_FACTOR) -> list[int]:
    """Batch sizes whose value is below `factor` x both neighbours (in batch
    order; see OUTLIER_FACTOR for why 0.6). The first and last batch sizes have
    one neighbour and are never flagged: small batches are legitimately slower
    than the next one up."""
    bs = sorted(values)
    return [b for prev, b, nxt in zip(bs, bs[1:], bs[2:])
            if values[b] < factor * values[prev] and values[b] < factor * values[nxt]]


def _label(device: str, model: str | None) -> str:
    return f"{device} ({model})" if model else device


def _matches_model(wanted: str | None, have: str | None) -> bool:
    return cmp.device_model_matches(wanted, have)


def _key(r) -> tuple:
    return cmp.identity(r).key()


def _usable(r: Result, model: str, metric: str) -> bool:
    m = r.metrics or {}
    return (r.model == model and r.stage == "throughput" and r.status in ("passed", "failed")
            and r.batch_size is not None and isinstance(m.get(metric), (int, float))
            and m.get("origin", "measured") != "published" and not cmp.is_null(r)
            and not m.get("contended"))  # measured beside busy neighbours: says nothing of the device


def _per_batch(results: list[Result], metric: str) -> dict[int, tuple[float, Result]]:
    """Newest figure per batch size: the results come in the store's order (never the hosts' clocks)."""
    out: dict[int, tuple[float, Result]] = {}
    for r in results:
        out[int(r.batch_size)] = (float(r.metrics[metric]), r)
    return out


def _pick(table: dict[int, float], at) -> tuple[int | None, float | None]:
    if not table:
        return None, None
    if at == "best_batch":
        b = max(table, key=lambda k: table[k])
        return b, table[b]
    return (at, table[at]) if at in table else (None, None)


def _differences(a, b) -> str:
    return "; ".join(cmp.differences(a, b))


def _verdict(claim: Claim, origin: str, num: dict[int, float] | None, den: dict[int, float] | None,
             reason_missing: str = "", reason_nc: str = "", note: str = "") -> ClaimVerdict:
    src = {"document": claim.source.document, "section": claim.source.section}
    numerator = _label(claim.numerator, claim.numerator_model)
    denominator = _label(claim.denominator, claim.denominator_model)
    v = ClaimVerdict(claim.id, claim.model, numerator, denominator, claim.at, claim.min_ratio, None, None, None,
                     None, None, "missing", reason_missing, src, origin)
    if reason_missing or reason_nc:
        v.verdict = "missing" if reason_missing else "not_comparable"
        v.reason = reason_missing or reason_nc
        return v
    v.numerator_batch, v.numerator_value = _pick(num, claim.at)
    v.denominator_batch, v.denominator_value = _pick(den, claim.at)
    if v.numerator_value is None or v.denominator_value is None:
        side = numerator if v.numerator_value is None else denominator
        v.reason = f"no {claim.metric} for {side} at batch {claim.at}"
        return v
    if v.denominator_value <= 0:
        v.reason = f"{denominator} figure is {v.denominator_value}: no ratio"
        return v
    v.ratio = v.numerator_value / v.denominator_value
    ok = v.ratio >= claim.min_ratio
    v.verdict = "pass" if ok else "fail"
    where = "best batch" if claim.at == "best_batch" else "batch"
    v.reason = (f"{numerator} {v.numerator_value:.7g} (bs{v.numerator_batch}) / {denominator} "
                f"{v.denominator_value:.7g} (bs{v.denominator_batch}) = {v.ratio:.4f} "
                f"{'>=' if ok else '<'} {claim.min_ratio:g} at {where}")
    if note:
        v.reason += f"; {note}"
    return v


def _outlier_note(tables: dict[str, dict[int, float]]) -> str:
    flagged = []
    for side, table in tables.items():
        for b in table_outliers(table):
            flagged.append(f"{side} bs{b} ({table[b]:g}) is far below both neighbours")
    return ("outlier: " + "; ".join(flagged)) if flagged else ""


# -- measured ----------------------------------------------------------------
def evaluate_claims(results: list[Result], claims: list[Claim],
                    ever_measured: set[str] | None = None) -> list[ClaimVerdict]:
    """Each claim against measured throughput results (from any number of
    hosts). Published figures imported into the store (metrics.origin
    "published") are left out: `evaluate_published` covers those; so are
    contended results. ``ever_measured``: the devices the store has any result
    of; a claim missing a device outside it is marked ``unmeasured``."""
    out = []
    newer = {id(r): i for i, r in enumerate(results)}  # the store's order, not the hosts' clocks
    for claim in claims:
        metric = claim.metric
        sides = {}
        for role, device, dmodel in (("numerator", claim.numerator, claim.numerator_model),
                                     ("denominator", claim.denominator, claim.denominator_model)):
            sides[role] = [r for r in results if _usable(r, claim.model, metric) and r.device == device
                           and _matches_model(dmodel, (r.metrics or {}).get("device_model"))]
        missing = [_label(d, m) for role, d, m in (("numerator", claim.numerator, claim.numerator_model),
                                                    ("denominator", claim.denominator, claim.denominator_model))
                   if not sides[role]]
        if missing:
            v = _verdict(claim, "measured", None, None,
                         reason_missing=f"no measured {metric} of {claim.model} on {' or '.join(missing)}")
            v.unmeasured = ever_measured is not None and any(
                d not in ever_measured for d, role in ((claim.numerator, "numerator"),
                                                       (claim.denominator, "denominator")) if not sides[role])
            out.append(v)
            continue
        groups = {role: defaultdict(list) for role in sides}
        for role, rs in sides.items():
            for r in rs:
                groups[role][_key(r)].append(r)
        common = set(groups["numerator"]) & set(groups["denominator"])
        if not common:
            newest = {role: rs[-1] for role, rs in sides.items()}
            diff = _differences(newest["numerator"], newest["denominator"])
            out.append(_verdict(claim, "measured", None, None, reason_nc=(
                f"{_label(claim.numerator, claim.numerator_model)} and "
                f"{_label(claim.denominator, claim.denominator_model)} results measure different things: {diff}")))
            continue
        # several comparable groups (e.g. two model versions measured on both): the newest
        key = max(common, key=lambda k: max(newer[id(r)] for role in groups for r in groups[role][k]))
        num = {b: v for b, (v, _) in _per_batch(groups["numerator"][key], metric).items()}
        den = {b: v for b, (v, _) in _per_batch(groups["denominator"][key], metric).items()}
        rep = {role: groups[role][key][0] for role in groups}
        note = "; ".join(x for x in (cmp.comparable(rep["numerator"], rep["denominator"])[1],
                                     _outlier_note({claim.numerator: num, claim.denominator: den})) if x)
        out.append(_verdict(claim, "measured", num, den, note=note))
    return out


# -- published ---------------------------------------------------------------
def _published_entries(bf, model, metric, device, device_model=None) -> dict[tuple, dict]:
    out: dict[tuple, dict] = defaultdict(dict)
    for b in bf.baselines:
        if (b.model == model and b.metric == metric and b.device == device and b.batch_size is not None
                and _matches_model(device_model, b.device_model)):
            out[_key(b)][b.batch_size] = b
    return dict(out)


def _values(entries: dict[tuple, dict]) -> dict[tuple, dict[int, float]]:
    """{comparison key: {batch: value}} of :func:`_published_entries`' baselines."""
    return {k: {bs: b.value for bs, b in t.items()} for k, t in entries.items()}


def evaluate_published(bf: BaselinesFile) -> list[ClaimVerdict]:
    """The documents' own tables held against their own claims."""
    out = []
    for claim in bf.claims:
        num_e = _published_entries(bf, claim.model, claim.metric, claim.numerator, claim.numerator_model)
        den_e = _published_entries(bf, claim.model, claim.metric, claim.denominator, claim.denominator_model)
        num_t, den_t = _values(num_e), _values(den_e)
        missing = [_label(d, m) for t, d, m in ((num_t, claim.numerator, claim.numerator_model),
                                                (den_t, claim.denominator, claim.denominator_model)) if not t]
        if missing:
            out.append(_verdict(claim, "published", None, None, reason_missing=(
                f"baselines hold no per-batch {claim.metric} of {claim.model} on {' or '.join(missing)}")))
            continue
        common = set(num_t) & set(den_t)
        if not common:
            diff = _differences(next(iter(next(iter(num_e.values())).values())),
                                next(iter(next(iter(den_e.values())).values())))
            out.append(_verdict(claim, "published", None, None,
                                reason_nc=f"the published tables measure different things: {diff}"))
            continue
        key = sorted(common, key=str)[0]
        num, den = num_t[key], den_t[key]
        assumed = cmp.comparable(next(iter(num_e[key].values())), next(iter(den_e[key].values())))[1]
        note = "; ".join(x for x in (assumed, _outlier_note({_label(claim.numerator, claim.numerator_model): num,
                                                            _label(claim.denominator, claim.denominator_model): den}))
                         if x)
        out.append(_verdict(claim, "published", num, den, note=note))
    return out


__all__ = ["ClaimVerdict", "evaluate_claims", "evaluate_published", "table_outliers", "VERDICTS"]
