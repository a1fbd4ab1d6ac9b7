"""How a throughput case is timed: the suite's `timing:` section (harness.metrics.timing explains each choice)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.errors import UserError


class TimingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    """How a throughput case is timed (harness.metrics.timing explains each choice)."""

    # at least this many warm-up iterations; warm-up goes on to a detected
    # steady state, for at most warmup_max_s
    warmup: int = Field(3, ge=0)
    warmup_max_s: float = Field(2.0, ge=0)
    # split over the minimum repetitions: each times min_iterations // repetitions
    # (at least 1) iterations and min_duration_s / repetitions seconds
    min_iterations: int = Field(10, gt=0)
    min_duration_s: float = Field(1.0, ge=0)
    # A safety stop so one slow case cannot eat a nightly run.
    max_duration_s: float = Field(120.0, gt=0)
    # Repetitions (the unit of evidence): at least `repetitions`, more until
    # the median's 95% interval is within +-target_rel_halfwidth, while the
    # measurement stays within budget_s.
    repetitions: int = Field(3, ge=1)
    max_repetitions: int = Field(10, ge=1)
    target_rel_halfwidth: float = Field(0.02, gt=0, lt=1)
    budget_s: float = Field(3.0, gt=0)
    # A repetition during which other processes used more than this share of
    # the machine is contended, and measured again at most max_redo times.
    contention_threshold: float = Field(0.05, gt=0, le=1)
    max_redo: int = Field(3, ge=0)
    # each repetition lasts at least this long (the probe's resolution is a clock tick)
    min_repetition_s: float = Field(0.25, ge=0)

    @model_validator(mode="after")
    def _repetitions(self):
        if self.max_repetitions < self.repetitions:
            raise ValueError(f"max_repetitions ({self.max_repetitions}) is below repetitions ({self.repetitions})")
        return self

    def with_overrides(self, overrides: dict | None, *, names: dict | None = None) -> "TimingSpec":
        """This spec with ``overrides`` (command line, pytest options) applied and
        checked by the same rules as the suite's ``timing:``. ``names`` maps a
        key to what the user typed (``{"warmup": "--warmup"}``) for the message."""
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        if not given:
            return self
        try:
            return type(self).model_validate({**self.model_dump(), **given})
        except ValidationError as exc:
            names = names or {}
            lines = []
            for e in exc.errors():
                key = str(e["loc"][0]) if e["loc"] else ""
                label = names.get(key, f"timing.{key}" if key else "timing")
                lines.append(f"  - {label} {given.get(key, '')}: {e['msg']}".replace(" : ", ": "))
            raise UserError("invalid timing override:\n" + "\n".join(lines),
                            fix="use warmup >= 0, min_iterations >= 1 and min_duration_s >= 0, as in a suite's "
                                "timing: section") from None
