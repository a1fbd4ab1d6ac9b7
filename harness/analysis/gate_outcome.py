"""What the gate decided, and how it is printed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from harness.errors import ExitCode

@dataclass
class Comparison:
    model: str
    case: str
    device: str
    metric: str
    direction: str
    baseline: float  # the reference level: the segment before the change, or the previous run
    candidate: float
    change: float  # relative change, candidate / baseline - 1 (signed as measured)
    threshold: str
    test: str
    p_value: float | None
    verdict: str  # regression | improvement | unchanged (pass: the bad-side bound inside the threshold) | inconclusive
    reason: str
    notice: str = ""
    baseline_runs: list[str] = field(default_factory=list)
    candidate_run: str = ""
    change_ci: list[float] | None = None  # 95% interval of the relative change
    change_run: str | None = None  # the run where the level changed
    suspects: list[str] = field(default_factory=list)  # version fields that changed there
    bad_bound: float | None = None  # the change interval's bound on the bad side (throughput: the lower)
    need: str = ""  # inconclusive: the precision that would decide it
    calibrated_halfwidth: float | None = None  # the candidate run's interval with the between-run spread
    stale: bool = False  # the candidate is not from its host's newest run (that run did not measure it)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GateOutcome:
    comparisons: list[Comparison]
    missing_baseline: list[str]
    missing_candidate: list[str]
    candidate_runs: list[str]
    notes: list[str] = field(default_factory=list)
    claims: list = field(default_factory=list)
    inconclusive: list[str] = field(default_factory=list)  # contended candidates: not judged
    contended_keys: list[tuple[str, str, str]] = field(default_factory=list)  # (run id, model, case) of those

    @property
    def regressions(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.verdict == "regression"]

    @property
    def failed_claims(self) -> list:
        return [c for c in self.claims if getattr(c, "origin", "measured") == "measured" and c.verdict == "fail"]

    @property
    def undecided(self) -> list[Comparison]:
        """Comparisons whose interval could decide neither way."""
        return [c for c in self.comparisons if c.verdict == "inconclusive"]

    @property
    def exit_code(self) -> int:
        if self.regressions or self.failed_claims:
            return ExitCode.FAILED
        if self.undecided or self.inconclusive:
            return ExitCode.INCONCLUSIVE
        if not self.comparisons or all(c.stale for c in self.comparisons):
            return ExitCode.NOTHING_COMPARED
        return ExitCode.OK

    @property
    def verdict(self) -> str:
        return {ExitCode.OK: "pass", ExitCode.FAILED: "fail", ExitCode.NOTHING_COMPARED: "fail",
                ExitCode.INCONCLUSIVE: "inconclusive"}[self.exit_code]


# -- text output --------------------------------------------------------------
LABEL = {"unchanged": "PASS"}


def format_outcome(out: GateOutcome, *, verbose: bool = False, subject: str = "GATE") -> str:
    lines = []
    n = len({(c.model, c.case) for c in out.comparisons}) + len(out.missing_baseline) + len(out.inconclusive)
    compared = len({(c.model, c.case) for c in out.comparisons})
    lines.append(f"compared {compared} of {n} candidate case(s) from run(s) {', '.join(out.candidate_runs) or 'none'}"
                 f" ({len(out.comparisons)} metric comparisons)")
    for c in out.comparisons:
        if verbose or c.verdict != "unchanged":
            lines.append(f"  {LABEL.get(c.verdict, c.verdict.upper()):11} {c.model} {c.case}: {c.reason}")
            if verbose:
                lines.append(f"              test: {c.test}")
    for x in out.inconclusive:
        lines.append(f"  INCONCLUSIVE {x}")
    unmeasured = [c for c in out.claims if getattr(c, "unmeasured", False)]
    for c in out.claims:
        if verbose or (c.verdict != "pass" and not getattr(c, "unmeasured", False)):
            lines.append(f"  CLAIM {c.verdict.upper():8} {c.claim_id} ({c.origin}): {c.reason}")
    if unmeasured and not verbose:
        lines.append(f"  {len(unmeasured)} claim(s) need devices this store lacks (never measured here; -v lists them)")
    if out.missing_baseline:
        lines.append(f"missing on the baseline side ({len(out.missing_baseline)}):")
        lines += [f"  {m}" for m in out.missing_baseline]
    if out.missing_candidate:
        lines.append(f"missing on the candidate side ({len(out.missing_candidate)}):")
        lines += [f"  {m}" for m in out.missing_candidate]
    lines += [f"note: {x}" for x in out.notes]
    lines += [f"notice: {c.notice}" for c in out.comparisons if c.notice]
    code = out.exit_code
    if code == ExitCode.INCONCLUSIVE:
        parts = [f"{len(out.undecided)} comparison(s) too imprecise to decide"] if out.undecided else []
        parts += [f"{len(out.inconclusive)} contended result(s) not judged"] if out.inconclusive else []
        lines.append(f"{subject} INCONCLUSIVE: no regression found, but {' and '.join(parts)}: remeasure them on a quiet "
                     f"machine (harness gate --remeasure)")
    elif code == ExitCode.NOTHING_COMPARED:
        against = "history" if subject == "GATE" else "the reference run"
        what = f"0 of {n} compared" if not out.comparisons else \
            f"the newest run(s) measured none of the {compared} case(s) judged"
        lines.append(f"{subject} FAIL: {what}: nothing was held against {against} (see the lists above)")
    elif code == ExitCode.FAILED:
        lines.append(f"{subject} FAIL: {len(out.regressions)} regression(s), {len(out.failed_claims)} failed claim(s)")
    else:
        lines.append(f"{subject} PASS: no regression in {len(out.comparisons)} comparison(s), each with its interval's "
                     f"bad-side bound inside the threshold")
    return "\n".join(lines)
