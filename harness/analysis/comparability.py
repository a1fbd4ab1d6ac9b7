"""When two figures may be held against each other: the one rule.

The report's ratio table, the README tables' ratio columns, the cross-device
claims, the accuracy verdicts and the gates all ask `comparable(a, b)`. Each
side is a measured :class:`~harness.results.Result`, a documented
:class:`~harness.config.baselines.Baseline`, or an :class:`Identity` built by
hand. Two figures compare only when they measure the same thing:

- the same **timing scope** (device compute vs host wall clock);
- the same **model**: the source artifact the device's own file was made from
  (an OM per SoC differs by bytes, its ONNX does not), else the weights;
- the same **preprocessing** (a recipe name; a result's stored identity
  ``name:params:golden`` compares by its name with a baseline's bare name).

A field unknown on both sides counts as equal (two published tables that
both leave preprocessing out); unknown on one side only is a difference.
A figure of the ``null`` runner (no inference ran: the harness's own
overhead) compares only with another null-runner figure (the history gate
watches that overhead); published views leave it out (`is_null`).

A documented value that is an assumption rather than the document's word
(``scope_source: assumed`` in baselines.yaml) still compares, but the reason
says so: "comparable if the T4 figures are device compute only — assumed".
"""

from __future__ import annotations

from dataclasses import dataclass

FIELDS = ("timing_scope", "model_artifact", "preprocessing")
NULL_RUNNER = "null"
_SCOPE_WORDS = {"device": "device compute only", "host": "host wall clock"}


@dataclass(frozen=True)
class Identity:
    label: str
    timing_scope: str | None = None
    model_artifact: str | None = None
    preprocessing: str | None = None
    assumed: tuple[str, ...] = ()  # fields whose value is assumed, not documented
    null_runner: bool = False

    def key(self) -> tuple:
        return (self.timing_scope, self.model_artifact, _recipe_name(self.preprocessing))


def _recipe_name(p: str | None) -> str | None:
    return p.split(":", 1)[0] if p else p


def model_artifact(r) -> str | None:
    """What model a measured figure ran (see the module docstring)."""
    m = r.metrics or {}
    for key in ("source_sha256", "model_sha256"):
        if m.get(key):
            return str(m[key])
    if r.artifact_sha256:
        return r.artifact_sha256
    if m.get("weights"):
        return f"weights:{m['weights']}"
    return None


def is_null(r) -> bool:
    """A result of the null runner: no inference ran, its figures are the harness's overhead."""
    return getattr(r, "runner", None) == NULL_RUNNER


def identity(x) -> Identity:
    if isinstance(x, Identity):
        return x
    if hasattr(x, "tolerance") and hasattr(x, "source"):  # a Baseline
        assumed = tuple(f for f, src in (("timing_scope", getattr(x, "scope_source", None)),
                                         ("preprocessing", getattr(x, "preprocessing_source", None)))
                        if src == "assumed")
        label = x.device_model or x.device
        return Identity(label, x.timing_scope, f"weights:{x.weights}" if x.weights else None,
                        getattr(x, "preprocessing", None), assumed, x.runner == NULL_RUNNER)
    m = getattr(x, "metrics", None) or {}
    label = m.get("device_model") or x.device
    return Identity(label, x.timing_scope, model_artifact(x), x.preprocessing, (), is_null(x))


def _short(v) -> str:
    s = str(v)
    return s[:12] if len(s) == 64 else s


def differences(a, b) -> list[str]:
    """What differs between two figures' identities, one phrase per field."""
    ia, ib = identity(a), identity(b)
    out = []
    for name, x, y in zip(FIELDS, ia.key(), ib.key()):
        if x != y:
            if name == "model_artifact" and any(str(v).startswith("weights:") for v in (x, y) if v):
                name, x, y = "weights", *(str(v).removeprefix("weights:") if v else v for v in (x, y))
            out.append(f"{name.replace('_', ' ')} {_short(x) if x else 'unknown'} vs {_short(y) if y else 'unknown'}")
    return out


def assumption_note(a, b) -> str:
    """'comparable if the T4 figures are device compute only — assumed', or ''."""
    notes = []
    for i in (identity(a), identity(b)):
        for f in i.assumed:
            if f == "timing_scope":
                what = "are " + _SCOPE_WORDS.get(i.timing_scope or "", f"{i.timing_scope} scope")
            else:
                what = f"were made with preprocessing {_recipe_name(i.preprocessing)}"
            notes.append(f"comparable if the {i.label} figures {what} — assumed")
    return "; ".join(dict.fromkeys(notes))


def comparable(a, b) -> tuple[bool, str]:
    """(True, '' or the assumption it rests on) or (False, what differs)."""
    ia, ib = identity(a), identity(b)
    if ia.null_runner != ib.null_runner:
        return False, "a null-runner figure (no inference ran) compares only with another null-runner figure"
    diff = differences(ia, ib)
    if diff:
        return False, "; ".join(diff)
    return True, assumption_note(ia, ib)


__all__ = ["FIELDS", "Identity", "assumption_note", "comparable", "differences", "identity", "is_null",
           "model_artifact"]
