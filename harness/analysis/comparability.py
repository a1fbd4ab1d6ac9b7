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

import re
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


_VENDOR_WORDS = frozenset({"nvidia", "tesla", "geforce", "quadro", "huawei", "ascend", "atlas", "hisilicon"})


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[^0-9a-z]+", name.lower()) if t]


def _token_fits(w: str, h: str) -> bool:
    # "910B" names every 910B chip (910B1..910B4): a chip variant is digits after a letter.
    # "A10" is not an "A100" nor "L4" an "L40S": after a digit, more digits are another model.
    return w == h or (w[-1].isalpha() and h.startswith(w) and h[len(w):].isdigit())


def device_model_matches(wanted: str | None, have: str | None) -> bool:
    """Does a result of device model ``have`` ("Tesla T4", "NVIDIA A100-SXM4-80GB",
    "310P3") measure the model a document names (``wanted``: "T4", "A100", "310P")?
    Whole words in order, vendor words aside; nothing named matches anything, a
    named model never matches an unknown one."""
    if not wanted:
        return True
    if not have:
        return False
    w = [t for t in _tokens(wanted) if t not in _VENDOR_WORDS] or _tokens(wanted)
    h = _tokens(have)
    return any(all(_token_fits(a, b) for a, b in zip(w, h[i:i + len(w)]))
               for i in range(len(h) - len(w) + 1))


def _short(v) -> str:
    s = str(v)
    return s[:12] if len(s) == 64 else s


def differences(a, b, ignore: tuple[str, ...] = ()) -> list[str]:
    """What differs between two figures' identities, one phrase per field (`ignore`: fields left out)."""
    ia, ib = identity(a), identity(b)
    out = []
    for name, x, y in zip(FIELDS, ia.key(), ib.key()):
        if x != y and name not in ignore:
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


def comparable(a, b, *, ignore: tuple[str, ...] = ()) -> tuple[bool, str]:
    """(True, '' or the assumption it rests on) or (False, what differs).

    ``ignore``: fields of FIELDS not to hold against each other (the history
    gate follows one benchmark across model artifacts: a changed artifact is
    its suspect, not a reason to compare nothing)."""
    ia, ib = identity(a), identity(b)
    if ia.null_runner != ib.null_runner:
        return False, "a null-runner figure (no inference ran) compares only with another null-runner figure"
    diff = differences(ia, ib, ignore)
    if diff:
        return False, "; ".join(diff)
    return True, assumption_note(ia, ib)


__all__ = ["FIELDS", "Identity", "device_model_matches", "assumption_note", "comparable", "differences", "identity", "is_null",
           "model_artifact"]
