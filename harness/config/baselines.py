"""Published figures (``baselines.yaml``): schema, loader and selection.

Every figure the model-zoo documents publish is one :class:`Baseline` (a
value, its unit, the device and settings it was taken under, a tolerance and
its provenance). Relative-device statements ("310P best-batch throughput is
at least 1.2x the 310's") are :class:`Claim` entries holding the threshold.

``load_baselines(path)`` reads and validates the file; every problem raises
:class:`harness.errors.UserError` naming the file, the entry (its id or index)
and the key, with what is allowed.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    field_validator,
    model_validator,
)

from harness.errors import UserError
from harness.vocab import DEVICE_NAMES, METRIC_DIRECTION, METRIC_UNIT, TIMED_METRICS

SCHEMA_VERSION = 1

# Metric names, directions, units and which need a timing scope: harness.vocab.
MODELS = ("se_resnext50", "xception", "efficientnet_b0")

ModelName = Literal["se_resnext50", "xception", "efficientnet_b0"]
DeviceFamily = Literal[DEVICE_NAMES]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(_Strict):
    """Where a figure comes from."""

    document: str  # seed file name, e.g. "004_03d065df82a4f76f.txt"
    section: str  # heading path as the document writes it, e.g. "6. 结果 / 2. 吞吐量"
    quote: str | None = None  # the figure exactly as printed, e.g. "0.79174", "3分钟"
    device_desc: str | None = None  # how the document describes the hardware
    software: str | None = None  # e.g. "MindSpore 1.3.0", "CANN 5.1.RC2"
    date: str | None = None  # as the document gives it
    note: str | None = None
    # The cell the figure is read from: `line` (1-based, in the document) and,
    # for a table, `row` (its first cell) and `column` (the header text, or
    # the 1-based cell index where the header is blank or repeated). The
    # provenance tests check that the quote stands in that cell as a whole
    # number, not merely somewhere in the document.
    line: int | None = None
    row: str | None = None
    column: str | int | None = None

    @field_validator("document", "section")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v


class Tolerance(_Strict):
    """How far a measurement may sit from the baseline and still agree.

    ``abs`` is in the metric's unit (percentage points for top1/top5); ``rel``
    is a fraction of the baseline value. With both, the larger slack applies.
    """

    abs: float | None = None
    rel: float | None = None

    @field_validator("abs", "rel")
    @classmethod
    def _non_negative(cls, v: float | None) -> float | None:
        if v is not None and (v < 0 or not math.isfinite(v)):
            raise ValueError("must be a finite number >= 0")
        return v

    @model_validator(mode="after")
    def _one_required(self) -> Tolerance:
        if self.abs is None and self.rel is None:
            raise ValueError("give at least one of 'abs' or 'rel'")
        return self

    def slack(self, reference: float) -> float:
        """Allowed distance from ``reference``: the larger of abs and rel*|reference|."""
        return max(self.abs or 0.0, (self.rel or 0.0) * abs(reference))


def _check_metric(v: str) -> str:
    if v not in METRIC_DIRECTION:
        raise ValueError(f"unknown metric {v!r}; allowed: {', '.join(METRIC_DIRECTION)}")
    return v


class Baseline(_Strict):
    """One published figure."""

    id: str
    model: ModelName
    metric: str
    value: float
    unit: str
    device: DeviceFamily
    device_model: str | None = None  # e.g. "T4" where the document names it
    batch_size: int | None = None
    precision: str | None = None
    timing_scope: Literal["device", "host"] | None = None
    # "documented": the document says how the figure was timed; "assumed": it
    # does not, and timing_scope is our reading. A verdict resting on an
    # assumed scope says so (harness.analysis.comparability).
    scope_source: Literal["documented", "assumed"] | None = None
    runner: str | None = None
    dataset: str | None = None
    num_devices: int | None = None
    epoch: int | None = None  # for figures read off per-epoch training log lines
    weights: str | None = None  # which trained weights the figure belongs to
    # the preprocessing recipe (harness.data.recipes) the figure was evaluated
    # with; a result of another recipe is not comparable with it
    preprocessing: str | None = None
    preprocessing_source: Literal["documented", "assumed"] | None = None
    tolerance: Tolerance
    source: Source

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        return _check_metric(v)

    @field_validator("id")
    @classmethod
    def _id_form(cls, v: str) -> str:
        if not v or any(ch.isspace() for ch in v) or v.startswith(".") or v.endswith("."):
            raise ValueError("must be a dotted name without spaces, e.g. 'se_resnext50.top1.ascend310.bs1'")
        return v

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator("batch_size", "num_devices", "epoch")
    @classmethod
    def _positive(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("must be >= 1")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Baseline:
        want = METRIC_UNIT[self.metric]
        if self.unit != want:
            raise ValueError(f"unit {self.unit!r} does not fit metric {self.metric!r}; use {want!r}")
        if self.metric in TIMED_METRICS and self.timing_scope is None:
            raise ValueError(
                f"metric {self.metric!r} needs 'timing_scope': 'device' (device compute only, "
                "e.g. ais_bench) or 'host' (wall clock on the host)"
            )
        return self

    @property
    def direction(self) -> str:
        return METRIC_DIRECTION[self.metric]


class Claim(_Strict):
    """A relative statement: numerator device >= min_ratio x denominator device."""

    id: str
    model: ModelName
    metric: str = "throughput_ips"
    numerator: DeviceFamily
    numerator_model: str | None = None
    denominator: DeviceFamily
    denominator_model: str | None = None
    at: Union[int, Literal["best_batch"]]
    min_ratio: float
    source: Source

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        return _check_metric(v)

    @field_validator("at", mode="before")
    @classmethod
    def _at(cls, v: Any) -> Any:
        if v == "best_batch" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError(f"got {v!r}; allowed: 'best_batch' or a batch size (integer >= 1)")

    @field_validator("min_ratio")
    @classmethod
    def _ratio(cls, v: float) -> float:
        if not (v > 0 and math.isfinite(v)):
            raise ValueError("must be a finite number > 0")
        return v


class BaselinesFile(_Strict):
    schema_version: Literal[1]
    baselines: list[Baseline]
    claims: list[Claim] = []

    @model_validator(mode="after")
    def _unique_ids(self) -> BaselinesFile:
        seen: dict[str, str] = {}
        dups = []
        for kind, entries in (("baselines", self.baselines), ("claims", self.claims)):
            for i, e in enumerate(entries):
                here = f"{kind}[{i}]"
                if e.id in seen:
                    dups.append(f"duplicate id {e.id!r} ({seen[e.id]} and {here})")
                else:
                    seen[e.id] = here
        if dups:
            raise ValueError("; ".join(dups) + "; ids must be unique across baselines and claims")
        return self

    def by_id(self, id: str) -> Baseline | Claim:
        for e in [*self.baselines, *self.claims]:
            if e.id == id:
                return e
        raise KeyError(id)


# --------------------------------------------------------------------------
# loading


def _entry_label(raw: Any, loc: tuple) -> tuple[str, tuple]:
    """'baselines[3] (id 'x')' for a loc starting with ('baselines', 3, ...)."""
    if len(loc) >= 2 and loc[0] in ("baselines", "claims") and isinstance(loc[1], int):
        label = f"{loc[0]}[{loc[1]}]"
        try:
            entry_id = raw[loc[0]][loc[1]].get("id")
        except Exception:
            entry_id = None
        if entry_id is not None:
            label += f" (id {entry_id!r})"
        return label, loc[2:]
    return "", loc


def _allowed_keys(model: type[BaseModel]) -> str:
    return ", ".join(model.model_fields)


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The schema class that holds the last key of ``loc``."""
    model: type[BaseModel] = BaselinesFile
    path = list(loc[:-1])
    while path:
        head = path.pop(0)
        if isinstance(head, int):
            continue
        if model is BaselinesFile and head == "baselines":
            model = Baseline
        elif model is BaselinesFile and head == "claims":
            model = Claim
        elif head == "tolerance":
            model = Tolerance
        elif head == "source":
            model = Source
        else:
            return None
    return model


def _describe(err: dict, raw: Any) -> str:
    loc = tuple(err.get("loc", ()))
    entry, rest = _entry_label(raw, loc)
    key = ".".join(str(p) for p in rest)
    etype = err.get("type", "")
    msg = err.get("msg", "")
    if etype == "extra_forbidden":
        model = _model_at(loc)
        allowed = f"; allowed keys: {_allowed_keys(model)}" if model else ""
        text = f"unknown key {key!r}{allowed}"
    elif etype == "missing":
        text = f"missing required key {key!r}"
    else:
        msg = msg.removeprefix("Value error, ")
        got = err.get("input")
        got_s = ""
        if etype not in ("value_error", "assertion_error") and not isinstance(got, (dict, list)):
            got_s = f" (got {got!r})"
        if isinstance(got, (datetime.date, datetime.time)):
            got_s += "; YAML read it as a date/time: quote it"
        text = f"key {key!r}: {msg}{got_s}" if key else f"{msg}{got_s}"
    return f"{entry}: {text}" if entry else text


def _format_validation_error(exc: ValidationError, raw: Any) -> str:
    lines = [_describe(e, raw) for e in exc.errors(include_url=False)]
    # unions and repeated causes can give the same line twice
    unique = list(dict.fromkeys(lines))
    n = len(unique)
    head = f"{n} problem{'s' if n != 1 else ''} in the baselines file:"
    return head + "".join(f"\n  - {line}" for line in unique)


def load_baselines(path: str | Path) -> BaselinesFile:
    """Read and validate a baselines YAML file; problems raise UserError."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError("baselines file not found", path=p,
                        fix="create it or pass the right path (the repository's is baselines.yaml at its root)") from None
    except OSError as exc:
        raise UserError(f"cannot read baselines file: {exc.strerror or exc}", path=p) from None
    except UnicodeDecodeError as exc:
        raise UserError(f"baselines file is not UTF-8 text: {exc.reason}", path=p) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(f"YAML syntax error{where}: {problem}", path=p,
                        fix="correct the YAML (indentation, quoting, a missing ':')") from None
    if not isinstance(raw, dict):
        raise UserError(
            f"top level must be a mapping with keys schema_version, baselines, claims (got {type(raw).__name__})",
            path=p,
        )
    version = raw.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise UserError(
            f"key 'schema_version': {version} is newer than this harness reads (it reads {SCHEMA_VERSION})",
            path=p, fix="upgrade the harness, or write the file in schema_version 1",
        )
    try:
        return BaselinesFile.model_validate(raw)
    except ValidationError as exc:
        raise UserError(_format_validation_error(exc, raw), path=p,
                        fix="see the schema in harness/config/baselines.py") from None


def select(
    bf: BaselinesFile | Iterable[Baseline],
    *,
    model: str | None = None,
    metric: str | None = None,
    device: str | None = None,
    batch_size: int | None = None,
) -> list[Baseline]:
    """The baselines matching every filter given (None = any)."""
    entries = bf.baselines if isinstance(bf, BaselinesFile) else list(bf)
    return [
        b for b in entries
        if (model is None or b.model == model)
        and (metric is None or b.metric == metric)
        and (device is None or b.device == device)
        and (batch_size is None or b.batch_size == batch_size)
    ]


__all__ = [
    "METRIC_DIRECTION",
    "METRIC_UNIT",
    "TIMED_METRICS",
    "MODELS",
    "SCHEMA_VERSION",
    "Source",
    "Tolerance",
    "Baseline",
    "Claim",
    "BaselinesFile",
    "load_baselines",
    "select",
    "locate_baselines",
]


DEFAULT_NAME = "baselines.yaml"


def locate_baselines(given: str | Path | None = None, root: str | Path | None = None, *,
                     required: bool = False) -> Path | None:
    """The baselines file to use: the one given, else ``baselines.yaml`` in
    ``root`` (pytest's rootdir; the current folder for the CLI), else none
    (or a UserError with ``required``). The one place this rule lives."""
    if given:
        return Path(given)
    default = Path(root or ".") / DEFAULT_NAME
    if default.is_file():
        return default
    if required:
        raise UserError("no baselines file", path=default, fix=f"pass --baselines PATH ({DEFAULT_NAME})")
    return None
