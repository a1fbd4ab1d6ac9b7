"""The results where the user is looking: one compact table per model, rendered with rich.

Used at the end of `harness run`, in pytest's terminal summary and by
`harness show [RUN]`. On a terminal the tables are drawn with box characters
and colour; elsewhere (CI logs, a pipe) they are plain ASCII without escape
codes. Either way they fit ``WIDTH`` columns.

Throughput cells read "value ± half-width" (the 95% interval over
repetitions); marks after the value: ``C`` contended (other processes were
busy: held against nothing), ``~`` imprecise (stopped before the interval
reached its target), ``!`` unstable (per-iteration cv >= 10%).
"""

from __future__ import annotations

import io
from collections import Counter, defaultdict

from harness.analysis.verdicts import verdicts_of
from harness.reports.formatting import doc, halfwidth, ms, num, weights_text
from harness.results.record import Result
from harness.vocab import STAGE_NAMES as STAGES
from harness.vocab import device_label

WIDTH = 100
SHORT = {"not_comparable": "not comp."}  # the verdict column's width
MARKS = (("contended", "C", "contended"), ("imprecise", "~", "imprecise"), ("unstable", "!", "unstable"))


def _marks(m: dict) -> str:
    flags = {"contended": bool(m.get("contended")), "imprecise": m.get("precise") is False,
             "unstable": bool(m.get("unstable"))}
    return "".join(mark for key, mark, _ in MARKS if flags[key])


def throughput_cell(m: dict) -> str:
    v = m.get("throughput_ips")
    if not isinstance(v, (int, float)):
        return "—"
    text = num(v, ".2f")
    hw = halfwidth(m)
    if hw is not None:
        text += f" ± {num(hw, '.2f')}"
    marks = _marks(m)
    return f"{text} {marks}" if marks else text


def efficiency_cells(m: dict) -> list[str]:
    """GFLOP/s and the fraction of the peak it is held against ('—' where unknown)."""
    g, f = m.get("gflop_s"), m.get("peak_fraction")
    return [num(g, ".1f") if isinstance(g, (int, float)) else "—",
            f"{num(100 * f, '.1f')}%" if isinstance(f, (int, float)) else "—"]


def _documented(r: Result) -> tuple[str, str]:
    vs = verdicts_of(r.baseline)
    if not vs:
        return "", ""
    return ", ".join(doc(v.value) for v in vs), ", ".join(SHORT.get(v.verdict, v.verdict) for v in vs)


def _model_rows(results: list[Result]) -> list[list[str]]:
    rows = []
    timed = [r for r in results if r.stage == "throughput" and r.status != "skipped"]
    for r in sorted(timed, key=lambda r: (r.target or r.device, r.batch_size or 0)):
        m = r.metrics
        documented, verdict = _documented(r)
        if r.status in ("failed", "error") and not verdict:
            verdict = r.status
        scenario = r.scenario or m.get("scenario")
        target = r.target or r.device
        if scenario and scenario != "harness":
            target += f" [{scenario}]"
        rows.append([target, str(r.batch_size or "—"), throughput_cell(m), ms(m.get("latency_ms_p50")),
                     ms(m.get("latency_ms_p99")), *efficiency_cells(m), documented, verdict])
    return rows


def _target(r: Result) -> str:
    return f"{r.target or r.device} bs{r.batch_size}" if r.batch_size else (r.target or r.device)


def _lines(results: list[Result]) -> list[str]:
    """Parity, accuracy and problem lines under a model's table."""
    out = []
    for r in results:
        m = r.metrics
        if r.stage == "parity" and r.status != "skipped":
            out.append(f"parity {_target(r)}: {r.status}, max|diff|/scale {num(m.get('max_abs_diff_rel'), '.3g')}, "
                       f"cosine {num(m.get('cosine'), '.6f')}")
        elif r.stage == "accuracy" and r.status != "skipped":
            vs = ", ".join(f"{v.metric} {v.verdict} vs {doc(v.value)}" for v in verdicts_of(r.baseline))
            out.append(f"accuracy {_target(r)}: {r.status}, top1 {num(m.get('top1'), '.3f')} "
                       f"top5 {num(m.get('top5'), '.3f')} on {m.get('num_images', '?')} images"
                       + (f" ({vs})" if vs else "") + (f"; weights {w}" if (w := weights_text(m)) else ""))
        elif r.status in ("failed", "error") and r.stage != "throughput":
            out.append(f"{r.stage} {r.case}: {r.status}: {r.reason.splitlines()[0] if r.reason else ''}")
    return out


def _skip_groups(results: list[Result]) -> list[str]:
    """Skipped cases grouped by reason: one line per reason with the device families and counts.

    A reason that differs between models only by the model's own name (its
    suite's path, its baseline ids) is one group, written with ``<model>``
    and followed by the models it covers."""
    groups: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        if r.status == "skipped":
            reason = r.reason or "(no reason recorded)"
            groups[reason.replace(r.model, "<model>") if len(r.model or "") >= 3 else reason].append(r)
    out = []
    for key, rs in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        fams = ", ".join(sorted({device_label(r.device) for r in rs}))
        stages = Counter(r.stage for r in rs)
        per = ", ".join(f"{s} {n}" for s, n in sorted(stages.items(),
                                                     key=lambda kv: STAGES.index(kv[0]) if kv[0] in STAGES else 99))
        models = sorted({r.model for r in rs})
        reason = f"{key} [<model>: {', '.join(models)}]" if len(models) > 1 else rs[0].reason or key
        out.append(f"{fams}: {len(rs)} skipped ({per}): {reason}")
    return out


def render(results: list[Result], *, terminal: bool, title: str | None = None, width: int = WIDTH) -> str:
    """The tables as text: styled for a terminal, plain ASCII otherwise."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    buf = io.StringIO()
    console = Console(file=buf, width=min(width, WIDTH), force_terminal=terminal, no_color=not terminal,
                      highlight=False, emoji=False, color_system="standard" if terminal else None,
                      legacy_windows=False)
    if title:
        console.print(title, style="bold" if terminal else None)
    by_model: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        by_model[r.model].append(r)
    marks_used = set()
    for model in sorted(by_model):
        rs = by_model[model]
        rows = _model_rows(rs)
        lines = _lines(rs)
        if not rows and not lines:
            continue
        counts = Counter(r.status for r in rs)
        heading = f"{model}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        if rows:
            t = Table(title=heading, title_justify="left", box=box.SIMPLE_HEAD if terminal else box.ASCII2,
                      safe_box=not terminal, pad_edge=False, show_edge=False, expand=False,
                      padding=(0, 1))
            for name, just in (("target", "left"), ("bs", "right"), ("img/s ± 95% CI", "right"),
                               ("p50 ms", "right"), ("p99 ms", "right"), ("GFLOP/s", "right"),
                               ("peak", "right"), ("doc", "right"), ("verdict", "left")):
                t.add_column(name, justify=just, overflow="fold")
            for row in rows:
                style = {"fail": "red", "failed": "red", "error": "red", "pass": "green"}.get(row[-1].split(",")[0])
                t.add_row(*(Text(c) for c in row), style=style if terminal else None)  # no markup in data
                marks_used.update(ch for ch in row[2] if ch in "C~!")
            console.print(t)
        else:
            console.print(heading)
        for line in lines:
            console.print("  " + line, markup=False)
    if marks_used:
        console.print("marks: " + ", ".join(f"{mark} {text}" for _, mark, text in MARKS if mark in marks_used),
                      markup=False)
    skips = _skip_groups(results)
    if skips:
        console.print("skipped:", style="bold" if terminal else None)
        for line in skips:
            console.print("  " + line, markup=False)
    text = buf.getvalue()
    return text if terminal else "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
