"""Markdown tables for READMEs, kept between marker comments.

A README holds one block per table:

    <!-- harness:table kind=throughput model=se_resnext50 source=documented document=004 -->
    (generated; do not edit by hand)
    <!-- harness:end -->

``kind``: ``throughput`` (batch size x device, ratio columns, a best-batch
row: the fourth document's shape) or ``accuracy`` (``bs1 Top1`` / ``best bs
Top1`` ... rows x device columns). ``source``: ``documented`` (figures from
baselines.yaml exactly as written there; needs no store, so CI can check it)
or ``measured`` (the newest passed result of each case in finished runs of
the store). Optional: ``document=`` (prefix of the source document's file
name), ``ratios=ascend310p/ascend310,ascend310p/gpu`` (default: the model's
claims), ``devices=cpu,gpu`` (column filter).

``update(readme, ...)`` rewrites the blocks in place; ``check`` reports the
stale blocks and writes nothing. A README without markers, with an unclosed
block or an unknown parameter is an error naming the file and line, and the
file is left as it was.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from harness.analysis.comparability import comparable, is_null
from harness.errors import UserError
from harness.fsio import read_user_text, write_text
from harness.reports.formatting import halfwidth
from harness.reports.training import training_table
from harness.results.history import run_order
from harness.vocab import DEVICE_FAMILIES, NPU_FAMILIES

BEGIN = re.compile(r"^<!--\s*harness:table\b(?P<params>.*?)-->\s*$")
END = re.compile(r"^<!--\s*harness:end\s*-->\s*$")
KINDS = ("throughput", "accuracy", "training")
PARAMS = {"kind", "model", "source", "document", "ratios", "devices"}
SHORT = {d.name: d.short for d in DEVICE_FAMILIES}
# README tables put the documents' NPUs first, as the documents do.
ORDER = (*NPU_FAMILIES, *[d.name for d in DEVICE_FAMILIES if d.name not in NPU_FAMILIES][::-1])
EXAMPLE = "<!-- harness:table kind=throughput model=se_resnext50 source=documented -->\n<!-- harness:end -->"


@dataclass
class Block:
    params: dict
    begin: int  # line index of the begin marker
    end: int  # line index of the end marker
    current: str


def _doc(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def parse(text: str, path) -> list[Block]:
    lines = text.split("\n")
    blocks, open_at, params = [], None, None
    for i, line in enumerate(lines):
        m = BEGIN.match(line.strip())
        if m:
            if open_at is not None:
                raise UserError(f"line {i + 1}: a harness:table block opens inside the block from line {open_at + 1}",
                                path=path, fix="close each block with <!-- harness:end -->")
            try:
                params = dict(kv.split("=", 1) for kv in shlex.split(m["params"]))
            except ValueError:
                raise UserError(f"line {i + 1}: parameters must be key=value", path=path,
                                fix=f"e.g. {EXAMPLE.splitlines()[0]}") from None
            unknown = set(params) - PARAMS
            if unknown:
                raise UserError(f"line {i + 1}: unknown parameter(s) {sorted(unknown)}; allowed: "
                                f"{', '.join(sorted(PARAMS))}", path=path)
            if params.get("kind") not in KINDS or not params.get("model"):
                raise UserError(f"line {i + 1}: needs kind= ({' or '.join(KINDS)}) and model=", path=path)
            if params.setdefault("source", "documented") not in ("documented", "measured"):
                raise UserError(f"line {i + 1}: source must be documented or measured", path=path)
            open_at = i
        elif END.match(line.strip()):
            if open_at is None:
                raise UserError(f"line {i + 1}: harness:end without a harness:table before it", path=path)
            blocks.append(Block(params, open_at, i, "\n".join(lines[open_at + 1:i])))
            open_at = None
    if open_at is not None:
        raise UserError(f"line {open_at + 1}: harness:table block is never closed", path=path,
                        fix="add <!-- harness:end --> after it")
    if not blocks:
        raise UserError("no harness:table markers found", path=path,
                        fix=f"add a block where the table should go:\n{EXAMPLE}")
    return blocks


def _md(header: list[str], rows: list[list[str]], align: list[str]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


# -- columns: {label: {"family": device, "values": {bs: (value_str, value_float, baseline or result)}}} ---
def _documented_columns(bf, p, metric: str) -> dict:
    cols: dict[str, dict] = {}
    for b in bf.baselines:
        if b.model != p["model"] or b.metric != metric:
            continue
        if p.get("document") and not b.source.document.startswith(p["document"]):
            continue
        label = b.device_model or SHORT.get(b.device, b.device)
        col = cols.setdefault(label, {"family": b.device, "values": defaultdict(list)})
        key = b.batch_size if b.batch_size else ("best" if b.id.endswith("best_bs") else "-")
        col["values"][key].append((_doc(b.value), b.value, b))
    return cols


def _measured_text(m: dict, metric: str, v: float, stage: str) -> str:
    """A measured cell: throughput as value ± the 95% interval's half-width over
    repetitions (where one was measured), marked when contended or imprecise."""
    if stage != "throughput":
        return f"{v:.3f}"
    text = f"{v:.2f}"
    hw = halfwidth(m)
    if metric == "throughput_ips" and hw is not None:
        text += f" ± {hw:.2f}"
    if m.get("contended"):
        text += " (contended)"
    elif m.get("precise") is False:
        text += " (imprecise)"
    return text


def _measured_columns(history, p, metric: str, stage: str) -> dict:
    runs = history.runs
    latest = {}

    for r in sorted(history.results, key=lambda r: (run_order(runs.get(r.run_id, {})), r.created_at)):
        if (r.model == p["model"] and r.stage == stage and r.status == "passed" and r.batch_size
                and runs.get(r.run_id, {}).get("status") == "finished" and not is_null(r)
                and isinstance(r.metrics.get(metric), (int, float))):
            latest[(r.target or r.device, r.batch_size)] = r
    cols: dict[str, dict] = {}
    for (target, bs), r in sorted(latest.items(), key=lambda kv: str(kv[0])):
        label = f"{SHORT.get(r.device, r.device)} ({target}, {r.timing_scope or 'no'} scope)" if stage == "throughput" \
            else f"{SHORT.get(r.device, r.device)} ({target})"
        col = cols.setdefault(label, {"family": r.device, "values": defaultdict(list)})
        v = float(r.metrics[metric])
        col["values"][bs].append((_measured_text(r.metrics, metric, v, stage), v, r))
    return cols


def _order(cols: dict, p) -> list[str]:
    wanted = p.get("devices", "").split(",") if p.get("devices") else None
    names = [n for n in cols if not wanted or cols[n]["family"] in wanted]
    return sorted(names, key=lambda n: (ORDER.index(cols[n]["family"]) if cols[n]["family"] in ORDER else 9, n))


def _cell(col, key) -> str:
    vals = col["values"].get(key) or []
    return " / ".join(dict.fromkeys(v[0] for v in vals)) if vals else "—"


def _one(col, key):
    vals = col["values"].get(key) or []
    return vals[0][1] if len(vals) == 1 else None


def _item(col, key):
    vals = col["values"].get(key) or []
    return vals[0][2] if len(vals) == 1 else None


def _scope(col) -> str | None:
    scopes = {getattr(v[2], "timing_scope", None) for vals in col["values"].values() for v in vals}
    return scopes.pop() if len(scopes) == 1 else None


class _Ratios:
    """Ratio cells, only where comparability.comparable holds for the two
    figures divided; the reasons it did not (or the assumption it rests on)
    become the table's notes."""

    def __init__(self):
        self.notes: dict[str, list[str]] = defaultdict(list)

    def cell(self, head: str, a, b, va, vb) -> str:
        if va is None or not vb:
            return "—"
        ok, why = comparable(a, b)
        if why and why not in self.notes[head]:
            self.notes[head].append(("not comparable: " if not ok else "") + why)
        return f"{va / vb:.4f}" if ok else "n/c"

    def text(self) -> str:
        return "".join(f" {head}: {'; '.join(ws)}." for head, ws in self.notes.items() if ws)


def _ratio_pairs(bf, p, names, cols) -> list[tuple[str, str]]:
    if p.get("ratios"):
        specs = [tuple(s.split("/", 1)) for s in p["ratios"].split(",") if "/" in s]
    elif bf is not None:
        specs = [(c.numerator_model or c.numerator, c.denominator_model or c.denominator)
                 for c in bf.claims if c.model == p["model"]]
    else:
        specs = []

    def find(key):
        return next((n for n in names if n == key or cols[n]["family"] == key
                     or n.startswith(SHORT.get(key, key) + " ")), None)
    pairs = []
    for a, b in specs:
        na, nb = find(a), find(b)
        if na and nb and (na, nb) not in pairs:
            pairs.append((na, nb))
    return pairs


def throughput_table(p, bf, history) -> str:
    cols = _documented_columns(bf, p, "throughput_ips") if p["source"] == "documented" \
        else _measured_columns(history, p, "throughput_ips", "throughput")
    names = _order(cols, p)
    if not names:
        return f"_No {p['source']} throughput figures for {p['model']}._"
    pairs = _ratio_pairs(bf, p, names, cols)
    heads = []
    for a, b in pairs:
        sa, sb = _scope(cols[a]), _scope(cols[b])
        heads.append(f"{a.split(' ')[0]}/{b.split(' ')[0]}" + (f" ({sa} scope)" if sa and sa == sb else ""))
    ratios = _Ratios()
    sizes = sorted({k for n in names for k in cols[n]["values"] if isinstance(k, int)})
    rows = []
    for bs in sizes:
        row = [f"bs{bs}"] + [_cell(cols[n], bs) for n in names]
        for head, (a, b) in zip(heads, pairs):
            row.append(ratios.cell(head, _item(cols[a], bs), _item(cols[b], bs), _one(cols[a], bs), _one(cols[b], bs)))
        rows.append(row)
    best_row, best_at = ["best bs"], {}
    for n in names:
        pts = {bs: _one(cols[n], bs) for bs in sizes if _one(cols[n], bs) is not None}
        if pts:
            bs = max(pts, key=pts.get)
            best_at[n] = bs
            best_row.append(f"{_cell(cols[n], bs)} (bs{bs})")
        else:
            best_row.append("—")
    for head, (a, b) in zip(heads, pairs):
        if a in best_at and b in best_at:
            ba, bb = best_at[a], best_at[b]
            best_row.append(ratios.cell(head, _item(cols[a], ba), _item(cols[b], bb), _one(cols[a], ba),
                                        _one(cols[b], bb)))
        else:
            best_row.append("—")
    rows.append(best_row)
    header = ["bs"] + names + heads
    note = ("Documented figures from baselines.yaml" if p["source"] == "documented"
            else "Measured by the harness (newest passed result per case; null-runner results left out)")
    note += ("; ratio columns divide the two columns' figures where they are comparable (same timing scope, "
             "model and preprocessing; n/c where not); the best bs row holds each column's highest figure.")
    note += ratios.text()
    return _md(header, rows, [":---:"] + [":---"] * (len(header) - 1)) + f"\n\n_{note}_"


def accuracy_table(p, bf, history) -> str:
    rows, names, cols_by_metric = [], [], {}
    for metric in ("top1", "top5"):
        cols = _documented_columns(bf, p, metric) if p["source"] == "documented" \
            else _measured_columns(history, p, metric, "accuracy")
        cols_by_metric[metric] = cols
        names += [n for n in _order(cols, p) if n not in names]
    if not names:
        return f"_No {p['source']} accuracy figures for {p['model']}._"
    for metric in ("top1", "top5"):
        cols = cols_by_metric[metric]
        keys = sorted({k for c in cols.values() for k in c["values"]},
                      key=lambda k: (0, k) if isinstance(k, int) else (1, 0) if k == "best" else (2, 0))
        for k in keys:
            label = {"best": "best bs", "-": ""}.get(k, f"bs{k}") if not isinstance(k, int) else f"bs{k}"
            rows.append([f"{label} {metric.capitalize()}".strip()]
                        + [_cell(cols[n], k) if n in cols else "—" for n in names])
    src = "Documented figures from baselines.yaml (%)" if p["source"] == "documented" \
        else "Measured by the harness (%, newest passed result per case; null-runner results left out)"
    return _md([""] + names, rows, [":---:"] + [":---:"] * len(names)) + f"\n\n_{src}._"


def render_block(params: dict, bf, history) -> str:
    if params["source"] == "measured" and history is None:
        raise UserError(f"a source=measured table ({params['kind']}, {params['model']}) needs a results store",
                        fix="pass --store PATH (or set $HARNESS_STORE)")
    if bf is None:
        raise UserError("README tables need baselines.yaml (for documented figures and claims)",
                        fix="pass --baselines PATH")
    table = {"throughput": throughput_table, "accuracy": accuracy_table, "training": training_table}
    body = table[params["kind"]](params, bf, history)
    return "<!-- generated by `harness readme`; edit the marker, not the table -->\n" + body


def refresh(path, bf, history_loader) -> tuple[str, str, list[Block]]:
    """(old text, new text, stale blocks). `history_loader()` is called only
    when a block needs the store."""
    path = Path(path)
    if not path.exists():
        raise UserError("README not found", path=path, fix="pass the README to update")
    text = read_user_text(path, what="README")
    blocks = parse(text, path)
    history = history_loader() if any(b.params["source"] == "measured" for b in blocks) else None
    lines = text.split("\n")
    out, pos, stale = [], 0, []
    for b in blocks:
        new = render_block(b.params, bf, history)
        out += lines[pos:b.begin + 1] + new.split("\n")
        pos = b.end
        if new != b.current:
            stale.append(b)
    out += lines[pos:]
    return text, "\n".join(out), stale


def diff(old: str, new: str, path) -> str:
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"{path} (committed)",
                                        f"{path} (from the data)", n=1))


def write(path, text: str) -> None:
    write_text(path, text)
