"""ais_bench console output read back: every layout the tool has printed.

Console layouts, oldest first (sources in tests/fixtures/README.md):

- ``inference_tools-2022.05``: key=value lines for H2D / NPU / D2H, then
  ``throughput (1000/NPU_compute_time/batchsize): T``. That release computed
  1000 / mean / batch, which is not images/s; the figure is recomputed.
- ``ais_infer-2022.06``: same lines, then
  ``throughput (1000*batchsize/NPU_compute_time): T`` (no batch printed).
- ``ais_infer-2022.09``: ``throughput 1000*batchsize(B)/NPU_compute_time.mean(M): T``;
  H2D / D2H lines only with ``--display_all_summary``.
- ``ais_bench-2023``: ``throughput 1000*batchsize.mean(B)/NPU_compute_time.mean(M): T``.
- ``ais_bench-2023-multithread``: ``NPU_compute_time (ms): mean = X`` only
  (``--threads N --pipeline``); the throughput line may follow.
- ``ais_bench-tabulate``: a ``tabulate`` "fancy_grid" table (Metric, min,
  max, mean, median, P99; H2D / D2H rows with ``--display_all_summary``),
  then ``Throughput 1000*batchsize.mean(B)/NPU_compute_time.mean(M): T``.
  The table rounds to 4 decimals; the mean in the Throughput line is exact.

Any of them may come once per device (``--device 0,1``) followed by
``i:N device_D throughput:T start_time:S end_time:E`` lines and
``summary throughput:T``; and a ``--dymShape_range`` run ends with
``run_count:N success_count:M avg_throughput:T`` and one row per shape
(log lines or a fancy_grid table).

`parse_ais_bench_text` returns a plain dict (`_result_dict`) naming the
variant; summary JSON and the typed summary are in `ais_bench_io`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from harness.errors import UserError, log_tail
from harness.runners.logtext import NUM

_NUM = NUM
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_METRIC = r"(NPU_compute_time|H2D_latency|D2H_latency)"
_STATS_LINE = re.compile(rf"\b{_METRIC}\s*\(ms\)\s*:\s*(.*)$")
_STAT_PAIR = re.compile(rf"(min|max|mean|median|percentile\(\d+(?:\.\d+)?%\)|P\d+(?:\.\d+)?|count)\s*=\s*({_NUM})",
                        re.IGNORECASE)
_MARKER = re.compile(r"-{3,}\s*Performance Summary\s*-{3,}")
_TP_BATCH = re.compile(
    rf"\b(throughput)\s+1000\*batchsize(\.mean)?\(\s*({_NUM})\s*\)\s*/\s*NPU_compute_time\.mean\(\s*({_NUM})\s*\)"
    rf"\s*:\s*({_NUM})", re.IGNORECASE)
_TP_NO_BATCH = re.compile(rf"\bthroughput\s*\(\s*1000\s*\*\s*batchsize\s*/\s*NPU_compute_time\s*\)\s*:\s*({_NUM})",
                          re.IGNORECASE)
_TP_INVERTED = re.compile(rf"\bthroughput\s*\(\s*1000\s*/\s*NPU_compute_time\s*/\s*batchsize\s*\)\s*:\s*({_NUM})",
                          re.IGNORECASE)
_PER_DEVICE = re.compile(rf"i:(\d+)\s+device_(\d+)\s+throughput:\s*({_NUM})\s+start_time:\s*(\S+)\s+end_time:\s*(\S+)")
_SUMMARY_THROUGHPUT = re.compile(rf"summary throughput:\s*({_NUM})")
_DYM_SUMMARY = re.compile(rf"run_count:\s*(\d+)\s+success_count:\s*(\d+)\s+avg_throughput:\s*({_NUM})")
_DYM_ROW = re.compile(rf"(?:^|\s)(\d+)\s+dymshape:(\S+)\s+result:(\S+)\s+throughput:\s*({_NUM})")
_TABLE_CHARS = "│|"


def _stat_key(key: str) -> str | None:
    """'percentile(99%)' / 'P99' / 'p99' -> 'p99'; min/max/mean/median/count as they are."""
    k = key.strip()
    low = k.lower()
    if low in ("min", "max", "mean", "median", "count"):
        return low
    m = re.fullmatch(r"percentile\((\d+(?:\.\d+)?)%\)|p(\d+(?:\.\d+)?)", low)
    if m:
        return "p" + (m.group(1) or m.group(2))
    return None


def _num(text: str) -> float:
    return float(text)


def _intish(x: float | None) -> float | int | None:
    if x is None or not math.isfinite(x):
        return x
    return round(x) if abs(x - round(x)) < 1e-9 else x


def _close(a: float, b: float, rel: float = 1e-3) -> bool:
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= rel * max(abs(a), abs(b), 1e-12)


# -- console text --------------------------------------------------------------
@dataclass
class _Block:
    """One "Performance Summary": the statistics and the throughput line."""

    stats: dict = field(default_factory=dict)      # "NPU_compute_time" -> {"mean": .., "p99": ..}
    table: bool = False
    table_headers: list | None = None
    tp_form: str | None = None                     # batch / batch_mean / no_batch / inverted
    tp_capital: bool = False
    tp_batch: float | None = None
    tp_mean: float | None = None
    tp_value: float | None = None
    closed: bool = False

    def empty(self) -> bool:
        return not self.stats and self.tp_form is None


def _clean(line: str) -> str:
    return _ANSI.sub("", line).rstrip("\r\n")


def _table_cells(line: str) -> list[str] | None:
    """The cells of one table row (`│ a │ b │` or `| a | b |`), or None."""
    s = line.strip()
    starts = [s.find(c) for c in _TABLE_CHARS if c in s]
    if not starts:
        return None
    s = s[min(starts):]
    sep = s[0]
    if s.count(sep) < 3 or not s.rstrip().endswith(sep):
        return None
    return [c.strip() for c in s.strip()[1:-1].split(sep)]


def _row_stats(headers: list[str] | None, values: list[str]) -> dict:
    names = [h for h in (headers or ["Metric", "min", "max", "mean", "median", "P99"])][1:]
    out = {}
    for h, v in zip(names, values):
        key = _stat_key(h)
        if key is None:
            continue
        try:
            out[key] = float(v)
        except ValueError:
            continue
    return out


def _scan(text: str):
    """Lines -> (blocks, per-device lines, summary throughput, dymshape info)."""
    blocks: list[_Block] = []
    devices: list[dict] = []
    summary = None
    dym: dict | None = None
    cur: _Block | None = None
    headers: list[str] | None = None
    dym_table = False

    def new_block() -> _Block:
        nonlocal cur
        if cur is not None and not cur.empty():
            blocks.append(cur)
        cur = _Block()
        return cur

    for raw in text.splitlines():
        line = _clean(raw)
        if _MARKER.search(line):
            new_block()
            continue
        cells = _table_cells(line)
        if cells:
            first = cells[0]
            if first.lower() == "metric":
                headers, dym_table = cells, False
                continue
            if first == "#" and any("dymshape" in c.lower() for c in cells):
                dym_table = True
                dym = dym or {"runs": []}
                continue
            m = re.fullmatch(rf"{_METRIC}\s*\(ms\)", first)
            if m:
                if cur is None or cur.closed:
                    new_block()
                cur.stats[m.group(1)] = _row_stats(headers, cells[1:])
                cur.table, cur.table_headers = True, headers
                continue
            if dym_table and len(cells) >= 4 and cells[0].isdigit():
                dym = dym or {"runs": []}
                try:
                    dym["runs"].append({"rank": int(cells[0]), "dymshape": cells[1], "result": cells[2],
                                        "throughput_ips": float(cells[3])})
                except ValueError:
                    pass
                continue
            continue
        m = _STATS_LINE.search(line)
        if m:
            pairs = {}
            for k, v in _STAT_PAIR.findall(m.group(2)):
                key = _stat_key(k)
                if key:
                    pairs[key] = _num(v)
            if cur is None or cur.closed:
                new_block()
            cur.stats[m.group(1)] = pairs
            continue
        m = _TP_BATCH.search(line)
        if m:
            if cur is None or cur.closed:
                new_block()
            cur.tp_form = "batch_mean" if m.group(2) else "batch"
            cur.tp_capital = m.group(1) == "Throughput"
            cur.tp_batch, cur.tp_mean, cur.tp_value = _num(m.group(3)), _num(m.group(4)), _num(m.group(5))
            cur.closed = True
            continue
        for rx, form in ((_TP_NO_BATCH, "no_batch"), (_TP_INVERTED, "inverted")):
            m = rx.search(line)
            if m:
                if cur is None or cur.closed:
                    new_block()
                cur.tp_form, cur.tp_value, cur.closed = form, _num(m.group(1)), True
                break
        if m:
            continue
        m = _PER_DEVICE.search(line)
        if m:
            devices.append({"index": int(m.group(1)), "device_id": int(m.group(2)),
                            "throughput_ips": _num(m.group(3)), "start_time": m.group(4),
                            "end_time": m.group(5)})
            continue
        m = _SUMMARY_THROUGHPUT.search(line)
        if m:
            summary = _num(m.group(1))
            continue
        m = _DYM_SUMMARY.search(line)
        if m:
            dym = dym or {"runs": []}
            dym.update(run_count=int(m.group(1)), success_count=int(m.group(2)),
                       avg_throughput_ips=_num(m.group(3)))
            continue
        m = _DYM_ROW.search(line)
        if m:
            dym = dym or {"runs": []}
            dym["runs"].append({"rank": int(m.group(1)), "dymshape": m.group(2), "result": m.group(3),
                                "throughput_ips": _num(m.group(4))})
    if cur is not None and not cur.empty():
        blocks.append(cur)
    return blocks, devices, summary, dym


def _variant(b: _Block) -> str:
    if b.table or b.tp_capital:
        return "ais_bench-tabulate"
    if b.tp_form == "inverted":
        return "inference_tools-2022.05"
    if b.tp_form == "no_batch":
        return "ais_infer-2022.06"
    if b.tp_form == "batch":
        return "ais_infer-2022.09"
    npu = b.stats.get("NPU_compute_time") or {}
    if npu and set(npu) <= {"mean", "count"}:
        return "ais_bench-2023-multithread"
    return "ais_bench-2023"


def _stats_out(d: dict | None) -> dict | None:
    if not d:
        return None
    out = {k: d.get(k) for k in ("mean", "min", "max", "median", "p99", "count")}
    for k, v in d.items():  # any other percentile the tool was set to
        if k.startswith("p") and k not in out:
            out[k] = v
    if out.get("count") is not None and math.isfinite(out["count"]):
        out["count"] = int(out["count"])
    return out


def _block_figures(b: _Block, batch_size: float | None, warnings: list[str]) -> dict:
    """Statistics, batch and images/s of one summary block."""
    npu = dict(b.stats.get("NPU_compute_time") or {})
    if b.tp_mean is not None:
        if "mean" not in npu:
            npu["mean"] = b.tp_mean
        elif abs(npu["mean"] - b.tp_mean) <= 5e-5 * max(1.0, abs(b.tp_mean)):
            npu["mean"] = b.tp_mean  # a table rounds to 4 decimals; the throughput line does not
        else:
            warnings.append(f"the statistics give mean {npu['mean']} ms but the throughput line divides by "
                            f"{b.tp_mean} ms")
    mean = npu.get("mean")
    out = {"npu_compute_time_ms": _stats_out(npu), "h2d_latency_ms": _stats_out(b.stats.get("H2D_latency")),
           "d2h_latency_ms": _stats_out(b.stats.get("D2H_latency")), "printed_throughput": b.tp_value,
           "printed_formula": None, "batch_size": None, "batch_size_source": None, "throughput_ips": None,
           "throughput_source": None}
    printed_batch = b.tp_batch
    if b.tp_form in ("batch", "batch_mean"):
        out["printed_formula"] = "1000 * batch / mean"
    elif b.tp_form == "no_batch":
        out["printed_formula"] = "1000 * batch / mean (batch not printed)"
        if mean and b.tp_value:
            printed_batch = b.tp_value * mean / 1000.0
    elif b.tp_form == "inverted":
        out["printed_formula"] = "1000 / mean / batch (inference_tools 2022.05: not images/s)"
        if mean and b.tp_value:
            printed_batch = 1000.0 / (mean * b.tp_value)
        warnings.append("this release printed 1000 / mean / batch, not images/s; the throughput is recomputed "
                        "as 1000 * batch / mean")
    if printed_batch is not None and b.tp_form in ("no_batch", "inverted"):
        if abs(printed_batch - round(printed_batch)) < 1e-3 * max(1.0, printed_batch):
            printed_batch = float(round(printed_batch))
        else:
            warnings.append(f"the batch implied by the printed throughput is {printed_batch:.4f}, not whole")
    if batch_size:
        out["batch_size"], out["batch_size_source"] = batch_size, "argument"
        if printed_batch and not _close(printed_batch, batch_size, rel=1e-6):
            warnings.append(f"ais_bench used batch {printed_batch:g} but the caller says {batch_size}; "
                            f"the caller's batch is used")
    elif printed_batch:
        out["batch_size"] = printed_batch
        out["batch_size_source"] = ("throughput line" if b.tp_form in ("batch", "batch_mean")
                                    else "implied by the printed throughput")
    b_used = out["batch_size"]
    check_mean = b.tp_mean if b.tp_mean is not None else mean
    if b_used and mean and mean > 0:
        printed_ok = (b.tp_form in ("batch", "batch_mean", "no_batch") and b.tp_value is not None
                      and check_mean and _close(1000.0 * b_used / check_mean, b.tp_value))
        if printed_ok:
            out["throughput_ips"], out["throughput_source"] = b.tp_value, "printed (checked: 1000 * batch / mean)"
        else:
            out["throughput_ips"] = 1000.0 * b_used / mean
            out["throughput_source"] = "computed: 1000 * batch / mean"
            if b.tp_form in ("batch", "batch_mean") and b.tp_value is not None:
                warnings.append(f"printed throughput {b.tp_value} is not 1000 * {b_used:g} / {check_mean}; "
                                f"recomputed from the batch and the mean")
    elif mean and not b_used:
        warnings.append("no batch size printed: pass batch_size to get images/s (1000 * batch / mean)")
    out["batch_size"] = _intish(out["batch_size"])
    return out


def _result_dict(**kw) -> dict:
    """The shape every parse_ais_bench_* function returns."""
    base = {
        "tool": "ais_bench",
        "source": None,
        "variant": None,              # which layout was found (see the module docstring)
        "features": {},               # display_all_summary / multi_device / dymshape_range / multi_thread
        "batch_size": None,
        "batch_size_source": None,
        "throughput_ips": None,       # images/s, device scope
        "throughput_source": None,
        "timing_scope": "device",
        "npu_compute_time_ms": None,  # {"mean", "min", "max", "median", "p99", "count"}
        "h2d_latency_ms": None,
        "d2h_latency_ms": None,
        "printed_throughput": None,
        "printed_formula": None,
        "summary_throughput_ips": None,
        "per_device": [],             # one dict per device of a multi-device run
        "dymshape_range": None,
        "npu_compute_times_ms": [],
        "args": None,
        "warnings": [],
    }
    base.update(kw)
    return base


def parse_ais_bench_text(text: str, *, where: str = "ais_bench output", batch_size: float | None = None) -> dict:
    """Read an ais_bench console log (any release). Raises UserError naming
    `where` when it holds no performance summary at all."""
    blocks, devices, summary, dym = _scan(text)
    if not blocks and not devices and summary is None and not dym:
        tail = log_tail(text, 10, empty="(nothing)")
        raise UserError(
            "ais_bench printed no performance summary: expected an 'NPU_compute_time (ms)' line or table row, "
            "a 'throughput 1000*batchsize...' line or a 'summary throughput:' line; last lines were:\n" + tail,
            path=where, fix="check that ais_bench ran to the end (its log above says why not)")
    warnings: list[str] = []
    figs = [_block_figures(b, batch_size, warnings) for b in blocks]
    variant = _variant(blocks[-1]) if blocks else "ais_bench-multidevice-lines-only"
    features = {
        "display_all_summary": any("H2D_latency" in b.stats or "D2H_latency" in b.stats for b in blocks),
        "multi_device": bool(devices) or summary is not None,
        "multi_thread": any(_variant(b) == "ais_bench-2023-multithread" for b in blocks),
        "dymshape_range": dym is not None,
        "table": any(b.table for b in blocks),
    }
    out = _result_dict(source=where, variant=variant, features=features, summary_throughput_ips=summary,
                       dymshape_range=dym, warnings=warnings)
    if features["multi_device"]:
        per_dev = []
        unused = list(range(len(figs)))
        for d in devices:
            match = next((i for i in unused if figs[i]["printed_throughput"] is not None
                          and _close(figs[i]["printed_throughput"], d["throughput_ips"], rel=1e-9)), None)
            if match is None and unused and len(figs) == len(devices):
                match = unused[0]  # same count, no exact figure: blocks print in completion order
            entry = dict(d)
            if match is not None:
                unused.remove(match)
                f = figs[match]
                entry.update(npu_compute_time_ms=f["npu_compute_time_ms"], h2d_latency_ms=f["h2d_latency_ms"],
                             d2h_latency_ms=f["d2h_latency_ms"], batch_size=f["batch_size"])
            per_dev.append(entry)
        out["per_device"] = per_dev
        total = summary if summary is not None else (sum(d["throughput_ips"] for d in devices) or None)
        out.update(throughput_ips=total, throughput_source=("printed 'summary throughput' (sum over devices)"
                                                            if summary is not None else "sum over devices"))
        batches = {f["batch_size"] for f in figs if f["batch_size"]}
        if len(batches) == 1:
            out["batch_size"] = batches.pop()
            out["batch_size_source"] = figs[0]["batch_size_source"]
        if summary is not None and devices and not _close(summary, sum(d["throughput_ips"] for d in devices)):
            warnings.append("the summary throughput is not the sum of the per-device figures")
    elif dym is not None:
        out["warnings"].append("a --dymShape_range run: one throughput per shape in dymshape_range['runs']")
        if figs:
            out.update({k: figs[-1][k] for k in ("batch_size", "batch_size_source")})
    elif figs:
        if len(figs) > 1:
            warnings.append(f"{len(figs)} performance summaries and no multi-device lines: the last one is used")
        out.update(figs[-1])
    return out
