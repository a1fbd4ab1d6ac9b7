"""Gate thresholds: per metric, with model / device wildcards, from the command line or a YAML file."""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.errors import UserError
from harness.vocab import METRICS

GATED_STAGE = tuple(k for k, m in METRICS.items() if m.stage in ("throughput", "accuracy"))

# asv uses p < 0.002 over many samples; our sweeps time as few as 5-10
# iterations per case, where the smallest exact two-sided Mann-Whitney p for
# 5 vs 5 is 0.0079, so 0.01 keeps short sweeps testable.
DEFAULT_ALPHA = 0.01
# A significant improvement this many times the threshold asks for the
# reference figures to be updated. A choice, not a published figure: the
# thresholds sit at about run-to-run noise, so 3x of one is a real change of
# the code or the host, and leaving the old reference in place would hide
# the next regression of that size.
DEFAULT_NOTICE_FACTOR = 3.0

# Built-in thresholds: 5% for timing (pyperf's and pytest-benchmark's usual
# order of run-to-run noise), 0.2 points for accuracy (a 50,000-image val set
# moves 100 images per 0.2 points).
DEFAULT_RULES = (
    {"metric": "throughput_ips", "rel": 0.05},
    {"metric": "latency_ms_*", "rel": 0.05},
    {"metric": "top?", "abs": 0.2},
)

@dataclass
class Rule:
    metric: str = "*"
    model: str = "*"
    device: str = "*"
    rel: float | None = None
    abs: float | None = None
    alpha: float | None = None

    def check(self, where: str, fix: str) -> "Rule":
        """A rule whose metric pattern matches no gated metric is a mistake, not a no-op."""
        if not any(fnmatch.fnmatchcase(m, self.metric) for m in GATED_STAGE):
            raise UserError(f"{where}: metric {self.metric!r} names no metric the gate knows",
                            fix=f"use one of {', '.join(GATED_STAGE)} (wildcards allowed); {fix}")
        return self

    def matches(self, metric: str, model: str, device: str) -> bool:
        return all(fnmatch.fnmatchcase(v, p) for v, p in ((metric, self.metric), (model, self.model),
                                                            (device, self.device)))


@dataclass
class Thresholds:
    """Per-metric thresholds with `model` / `device` wildcards. Rules apply
    in order and a later match overrides what it sets, so put general rules
    first and specific ones after."""

    rules: list[Rule] = field(default_factory=lambda: [Rule(**r) for r in DEFAULT_RULES])
    alpha: float = DEFAULT_ALPHA
    notice_factor: float = DEFAULT_NOTICE_FACTOR

    def resolve(self, metric: str, model: str, device: str) -> dict:
        out = {"rel": None, "abs": None, "alpha": self.alpha}
        for r in self.rules:
            if r.matches(metric, model, device):
                if r.rel is not None or r.abs is not None:
                    out["rel"], out["abs"] = r.rel, r.abs
                if r.alpha is not None:
                    out["alpha"] = r.alpha
        return out

    def add_spec(self, spec: str) -> None:
        """`metric[:model[:device]]=5%` (relative) or `=0.2` (absolute units)."""
        try:
            lhs, rhs = spec.split("=", 1)
            parts = lhs.split(":")
            if not 1 <= len(parts) <= 3 or not all(parts):
                raise ValueError
            metric, model, device = (parts + ["*", "*"])[:3]
            rhs = rhs.strip()
            rule = Rule(metric, model, device)
            if rhs.endswith("%"):
                rule.rel = float(rhs[:-1]) / 100
            else:
                rule.abs = float(rhs)
            if not (math.isfinite(rule.rel or rule.abs or 0.0) and (rule.rel or rule.abs or 0.0) >= 0):
                raise ValueError
        except ValueError:
            raise UserError(f"bad --threshold {spec!r}",
                            fix="write metric[:model[:device]]=5% (relative) or =0.2 (absolute), "
                                "e.g. throughput_ips:*:ascend*=3%") from None
        self.rules.append(rule.check(f"--threshold {spec!r}", "e.g. throughput_ips:*:ascend*=3%"))


def load_thresholds(path: str | Path | None) -> Thresholds:
    """Read a thresholds YAML file (see docs/nightly-ci.md); None: built-ins."""
    th = Thresholds()
    if path is None:
        return th

    path = Path(path)
    fix = "see docs/nightly-ci.md for the thresholds file format"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("thresholds file not found", path=path, fix=fix) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"not valid YAML ({exc})", path=path, fix=fix) from None
    if not isinstance(raw, dict) or raw.get("schema_version") != 1:
        raise UserError("not a thresholds file (needs 'schema_version: 1')", path=path, fix=fix)
    unknown = set(raw) - {"schema_version", "alpha", "improvement_notice", "rules"}
    if unknown:
        raise UserError(f"unknown keys {sorted(unknown)}; allowed: alpha, improvement_notice, rules", path=path)
    try:
        th.alpha = float(raw.get("alpha", th.alpha))
        th.notice_factor = float(raw.get("improvement_notice", th.notice_factor))
        for i, r in enumerate(raw.get("rules") or []):
            if not isinstance(r, dict) or set(r) - set(Rule.__dataclass_fields__):
                raise UserError(f"rules[{i}]: expected a mapping with keys "
                                f"{', '.join(Rule.__dataclass_fields__)}", path=path, fix=fix)
            th.rules.append(Rule(**{k: (float(v) if k in ("rel", "abs", "alpha") else str(v))
                                    for k, v in r.items()}).check(f"{path}: rules[{i}]", fix))
    except (TypeError, ValueError) as exc:
        raise UserError(f"bad value ({exc})", path=path, fix=fix) from None
    return th


