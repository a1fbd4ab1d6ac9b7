"""What ais_bench writes, read back: its summary JSON (every key set), its
output tensors (TXT/NPY), and the command line that produces them; plus the
typed summary (`AisBenchSummary`) the runner uses, over either the JSON or
the console text (`ais_bench_text`, every console layout).

`parse_ais_bench_file` tells a console log from a summary JSON by content.
JSON key sets: `sumary.json` of 2022 (no count), `percentile(99%)` + `count`
(2023), `mean` + `count` only (multi-thread), `P99` + `count` (current).
ais_bench stores `args` as `sys.argv`, a list; the batch size is read from
`--batchsize` / `--batch-size` / `--dymBatch` / `--dym-batch` in it.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from harness.data.labels import read_label_file
from harness.errors import UserError
from harness.metrics import TopK
from harness.runners.ais_bench_text import (
    _Block,
    _block_figures,
    _close,
    _result_dict,
    _scan,
    _stat_key,
    parse_ais_bench_text,
)
from harness.runners.logtext import read_log

@dataclass
class Stats:
    """One `... (ms): min = .., max = .., mean = ..` line, table row or summary-JSON block."""

    mean: float
    min: float | None = None
    max: float | None = None
    median: float | None = None
    p99: float | None = None
    count: int | None = None


@dataclass
class DeviceThroughput:
    index: int
    device_id: int
    throughput_ips: float
    start_time: str
    end_time: str


@dataclass
class AisBenchSummary:
    """Everything one ais_bench run reported, whichever way it was printed."""

    npu_compute_time: Stats | None = None
    h2d_latency: Stats | None = None
    d2h_latency: Stats | None = None
    # the figure ais_bench itself printed (1000 x batch / mean NPU ms)
    throughput_ips: float | None = None
    batch_size: float | None = None
    per_device: list[DeviceThroughput] = field(default_factory=list)
    summary_throughput_ips: float | None = None
    npu_compute_times_ms: list[float] = field(default_factory=list)
    args: dict = field(default_factory=dict)
    source: str = "stdout"
    variant: str | None = None
    warnings: list[str] = field(default_factory=list)

    def throughput(self, batch_size: int | None = None) -> float | None:
        """The run's throughput: the multi-device summary, else the printed
        single-device figure, else 1000 x batch / mean NPU ms (mean-only form)."""
        if self.summary_throughput_ips is not None:
            return self.summary_throughput_ips
        if self.throughput_ips is not None:
            return self.throughput_ips
        b = batch_size or self.batch_size
        if b and self.npu_compute_time and self.npu_compute_time.mean > 0:
            return 1000.0 * b / self.npu_compute_time.mean
        return None

    def as_metrics(self, batch_size: int | None = None) -> dict:
        """Flat metrics in the timing engine's names (device scope)."""
        out: dict = {"throughput_ips": self.throughput(batch_size), "timing_scope": "device"}
        t = self.npu_compute_time
        if t is not None:
            out.update(latency_ms_mean=t.mean, latency_ms_min=t.min, latency_ms_max=t.max,
                       latency_ms_p50=t.median, latency_ms_p99=t.p99)
            if t.count is not None:
                out["iterations"] = t.count
        if self.npu_compute_times_ms:
            out["latencies_ms"] = list(self.npu_compute_times_ms)
            out.setdefault("iterations", len(self.npu_compute_times_ms))
        for name in ("h2d_latency", "d2h_latency"):
            s = getattr(self, name)
            if s is not None:
                out[f"{name}_ms_mean"] = s.mean
        if self.per_device:
            out["per_device"] = [asdict(d) for d in self.per_device]
        return {k: v for k, v in out.items() if v is not None}



def _argv_options(args) -> dict:
    """ais_bench writes sys.argv into the summary JSON (a list); older
    hand-made files hold a dict. Either way -> {option name: value}."""
    if isinstance(args, dict):
        return {str(k).lstrip("-"): v for k, v in args.items()}
    opts: dict = {}
    if isinstance(args, (list, tuple)):
        items = [str(a) for a in args]
        i = 0
        while i < len(items):
            a = items[i]
            if a.startswith("-"):
                name, eq, val = a.lstrip("-").partition("=")
                if eq:
                    opts[name] = val
                elif i + 1 < len(items) and not items[i + 1].startswith("--"):
                    opts[name] = items[i + 1]
                    i += 1
                else:
                    opts[name] = True
            i += 1
    return opts


def _batch_from_args(opts: dict) -> float | None:
    for key in ("dymBatch", "dym-batch", "dym_batch", "batchsize", "batch-size", "batch_size"):
        v = opts.get(key)
        try:
            b = float(v) if v not in (None, True, "") else None
        except (TypeError, ValueError):
            b = None
        if b and b > 0:
            return b
    return None


def _json_variant(raw: dict, blocks: dict) -> str:
    keys = set().union(*(set(b) for b in blocks.values())) if blocks else set()
    if any(re.fullmatch(r"P\d+(?:\.\d+)?", k) for k in keys):
        return "json-P99-count"
    if keys and keys <= {"mean", "count"}:
        return "json-mean-count-multithread"
    if "count" in keys:
        return "json-percentile-count"
    return "json-sumary-2022"


def parse_ais_bench_json(source, *, batch_size: float | None = None, where: str | None = None) -> dict:
    """Read an ais_bench summary JSON (`<name>_summary.json`, or `sumary.json`
    of 2022): a path or an already-loaded dict."""
    if isinstance(source, dict):
        raw, where = source, where or "ais_bench summary"
    else:
        p = Path(source)
        where = where or str(p)
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError("ais_bench summary file not found", path=p,
                            fix="ais_bench writes <output>/<output_dirname>_summary.json; pass that file") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"not JSON: {exc}", path=p, fix="pass the *_summary.json ais_bench wrote") from None
    if not isinstance(raw, dict) or "NPU_compute_time" not in raw:
        keys = ", ".join(sorted(raw)[:8]) if isinstance(raw, dict) else type(raw).__name__
        raise UserError(f"not an ais_bench summary: no 'NPU_compute_time' key (found: {keys})", path=where,
                        fix="pass the *_summary.json ais_bench wrote beside its output folder")
    blocks = {k: raw[k] for k in ("NPU_compute_time", "H2D_latency", "D2H_latency") if isinstance(raw.get(k), dict)}
    stats = {}
    for k, block in blocks.items():
        d = {}
        for key, v in block.items():
            sk = _stat_key(key)
            if sk is None or v is None:
                continue
            try:
                d[sk] = float(v)
            except (TypeError, ValueError):
                continue
        stats[k] = d
    warnings: list[str] = []
    opts = _argv_options(raw.get("args"))
    b = _Block(stats={k: v for k, v in stats.items() if v})
    tp = raw.get("throughput")
    b.tp_value = float(tp) if tp is not None else None
    variant = _json_variant(raw, blocks)
    args_batch = _batch_from_args(opts)
    npu_mean = stats.get("NPU_compute_time", {}).get("mean")
    # which formula produced "throughput": 1000*B/M (all but the first release) or 1000/M/B (2022.05)
    if b.tp_value and npu_mean:
        if args_batch and _close(b.tp_value, 1000.0 / npu_mean / args_batch) and args_batch != 1:
            b.tp_form = "inverted"
        elif args_batch:
            b.tp_form, b.tp_batch = "batch", args_batch
        else:
            b.tp_form = "no_batch"
    figs = _block_figures(b, batch_size, warnings)
    if b.tp_form == "batch" and figs["batch_size_source"] == "throughput line":
        figs["batch_size_source"] = "args in the summary"
    times = raw.get("npu_compute_time_list") or []
    durations: list[float] = []
    for t in times:  # multi-thread runs store [start, end] pairs
        if isinstance(t, (list, tuple)) and len(t) == 2:
            durations.append(float(t[1]) - float(t[0]))
        elif isinstance(t, (int, float)):
            durations.append(float(t))
    out = _result_dict(source=where, variant=variant, args=raw.get("args"), npu_compute_times_ms=durations,
                       features={"display_all_summary": None, "multi_device": False,
                                 "multi_thread": variant == "json-mean-count-multithread"
                                 or any(isinstance(t, (list, tuple)) for t in times),
                                 "dymshape_range": False, "table": False},
                       warnings=warnings)
    out.update(figs)
    if out["npu_compute_time_ms"] is None and out["printed_throughput"] is None:
        raise UserError("ais_bench summary holds no NPU_compute_time mean and no throughput", path=where,
                        fix="the run probably failed before timing anything; re-run ais_bench")
    if out["throughput_ips"] is None and out["printed_throughput"] is not None and out["npu_compute_time_ms"] is None:
        out["throughput_ips"], out["throughput_source"] = out["printed_throughput"], "printed (unchecked: no mean)"
    return out


def parse_ais_bench_file(path: str | Path, *, batch_size: float | None = None) -> dict:
    """A console log or a summary JSON, told apart by content."""
    p = Path(path)
    text = read_log(p, fix="pass an ais_bench console log or *_summary.json")
    if text.lstrip().startswith("{"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError:
            raw = None
        if isinstance(raw, dict):
            return parse_ais_bench_json(raw, batch_size=batch_size, where=str(p))
    return parse_ais_bench_text(text, where=str(p), batch_size=batch_size)


# -- the first module's API, on top of the above ---------------------------------
def _stats(pairs: dict[str, float], where: str) -> Stats:
    if "mean" not in pairs:
        raise UserError(f"ais_bench statistics without a mean: {pairs}", path=where,
                        fix="pass the whole ais_bench output or summary file")
    count = pairs.get("count")
    return Stats(mean=pairs["mean"], min=pairs.get("min"), max=pairs.get("max"), median=pairs.get("median"),
                 p99=pairs.get("p99"), count=int(count) if count is not None and math.isfinite(count) else None)


def _summary_from(d: dict, where: str) -> AisBenchSummary:
    s = AisBenchSummary(source=where, variant=d["variant"])
    for key, attr in (("npu_compute_time_ms", "npu_compute_time"), ("h2d_latency_ms", "h2d_latency"),
                      ("d2h_latency_ms", "d2h_latency")):
        st = d.get(key)
        if st and st.get("mean") is not None:
            setattr(s, attr, _stats({k: v for k, v in st.items() if v is not None}, where))
    return s


def parse_stdout(text: str, *, where: str = "ais_bench output") -> AisBenchSummary:
    """Read ais_bench's console summary. Raises UserError when it holds no
    performance figure at all (a crashed or foreign run)."""
    d = parse_ais_bench_text(text, where=where)
    blocks, _, _, _ = _scan(text)
    s = _summary_from(d, where)
    if blocks:  # multi-device: the last block's statistics, as the first module kept them
        last = _block_figures(blocks[-1], None, [])
        for key, attr in (("npu_compute_time_ms", "npu_compute_time"), ("h2d_latency_ms", "h2d_latency"),
                          ("d2h_latency_ms", "d2h_latency")):
            st = last.get(key)
            if st and st.get("mean") is not None:
                setattr(s, attr, _stats({k: v for k, v in st.items() if v is not None}, where))
        s.batch_size = last["batch_size"]
        printed = blocks[-1].tp_form in ("batch", "batch_mean", "no_batch")
        s.throughput_ips = last["printed_throughput"] if printed else last["throughput_ips"]
    s.per_device = [DeviceThroughput(e["index"], e["device_id"], e["throughput_ips"], e["start_time"],
                                     e["end_time"]) for e in d["per_device"]]
    s.summary_throughput_ips = d["summary_throughput_ips"]
    return s


def parse_summary_json(path: str | Path) -> AisBenchSummary:
    """Read an ais_bench `<name>_summary.json` (or 2022's `sumary.json`)."""
    p = Path(path)
    d = parse_ais_bench_json(p)
    s = _summary_from(d, str(p))
    s.throughput_ips = d["throughput_ips"]
    s.batch_size = d["batch_size"]
    s.npu_compute_times_ms = list(d["npu_compute_times_ms"])
    args = d["args"]
    s.args = args if isinstance(args, dict) else _argv_options(args)
    return s


def read_summary(path: str | Path, *, batch_size: float | None = None) -> AisBenchSummary:
    """A console log (any release) or a summary JSON (any key set), told apart
    by content; `batch_size` overrides what the file says (with a warning when
    they differ)."""
    d = parse_ais_bench_file(path, batch_size=batch_size)
    s = _summary_from(d, str(path))
    s.throughput_ips, s.batch_size = d["throughput_ips"], d["batch_size"]
    s.summary_throughput_ips = d["summary_throughput_ips"]
    s.npu_compute_times_ms = list(d["npu_compute_times_ms"])
    s.args = d["args"] if isinstance(d["args"], dict) else _argv_options(d["args"])
    s.per_device = [DeviceThroughput(e["index"], e["device_id"], e["throughput_ips"], e["start_time"],
                                     e["end_time"]) for e in d["per_device"]]
    s.warnings = list(d["warnings"])
    return s


# -- command line ------------------------------------------------------------
def build_command(model: str | Path, *, input: str | Path | None = None, output: str | Path | None = None,
                  output_dirname: str | None = None, outfmt: str = "NPY", loop: int | None = None,
                  warmup_count: int | None = None, device: int | list[int] = 0, batch_size: int | None = None,
                  dym_batch: int | None = None, display_all_summary: bool = False,
                  python: str = "python3") -> list[str]:
    if outfmt not in ("NPY", "BIN", "TXT"):
        raise UserError(f"ais_bench --outfmt must be NPY, BIN or TXT, not {outfmt!r}")
    dev = ",".join(str(d) for d in device) if isinstance(device, (list, tuple)) else str(device)
    cmd = [python, "-m", "ais_bench", "--model", str(model), "--device", dev]
    if input is not None:
        cmd += ["--input", str(input)]
    if output is not None:
        cmd += ["--output", str(output), "--outfmt", outfmt]
        if output_dirname:
            cmd += ["--output_dirname", output_dirname]
    if loop is not None:
        cmd += ["--loop", str(loop)]
    if warmup_count is not None:
        cmd += ["--warmup_count", str(warmup_count)]
    if batch_size is not None:
        cmd += ["--batchsize", str(batch_size)]
    if dym_batch is not None:
        cmd += ["--dymBatch", str(dym_batch)]
    if display_all_summary:
        cmd += ["--display_all_summary", "1"]
    return cmd


def describe(cmd: list[str]) -> str:
    return shlex.join(cmd)


# -- output tensors ----------------------------------------------------------
_OUT_NAME = re.compile(r"^(?P<stem>.+)_(?P<index>\d+)\.(?P<ext>txt|npy)$")


def read_outputs(folder: str | Path, *, output_index: int = 0) -> dict[str, np.ndarray]:
    """`<input stem>_<output index>.{txt,npy}` files -> {input stem: (rows, classes) array}."""
    d = Path(folder)
    if not d.is_dir():
        raise UserError("ais_bench output folder not found", path=d,
                        fix="pass the folder ais_bench wrote with --output/--output_dirname")
    out: dict[str, np.ndarray] = {}
    for p in sorted(d.iterdir()):
        m = _OUT_NAME.match(p.name)
        if not m or int(m.group("index")) != output_index:
            continue
        try:
            arr = np.loadtxt(p, dtype=np.float32, ndmin=2) if m.group("ext") == "txt" else np.load(p)
        except ValueError as exc:
            raise UserError(f"cannot read ais_bench output: {exc}", path=p,
                            fix="outputs must be written with --outfmt TXT or NPY") from None
        arr = np.asarray(arr, dtype=np.float32)
        out[m.group("stem")] = arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr.reshape(1, -1)
    if not out:
        raise UserError(f"no ais_bench output files (<stem>_{output_index}.txt or .npy) in the folder", path=d,
                        fix="run ais_bench with --output DIR --outfmt TXT (or NPY)")
    return out


def topk_from_outputs(folder: str | Path, label_file: str | Path, *, ks=(1, 5),
                      input_order: list[str] | None = None) -> dict:
    """Top-k of ais_bench's output files against a label file.

    A file holding one row belongs to the input of its stem. A file holding
    k rows (a batched run over a folder of per-image files) holds the inputs
    that start at its stem in `input_order` (the inputs' stems in the order
    ais_bench read them: sorted names)."""
    outputs = read_outputs(folder)
    labels = read_label_file(label_file).by_stem()
    position = {s: i for i, s in enumerate(input_order)} if input_order else {}
    topk = TopK(ks)
    unlabelled = []
    for stem, rows in outputs.items():
        if len(rows) == 1:
            stems = [stem]
        elif stem in position:
            i = position[stem]
            stems = input_order[i:i + len(rows)]
            rows = rows[:len(stems)]
        else:
            raise UserError(f"output {stem} holds {len(rows)} rows but the order of the inputs is unknown",
                            path=folder, fix="pass the input folder so each row can be matched to its image")
        missing = [s for s in stems if s not in labels]
        if missing:
            unlabelled += missing
            continue
        topk.update(rows, np.array([labels[s] for s in stems]), where=f"{folder}/{stem}")
    if unlabelled:
        raise UserError(f"{len(unlabelled)} outputs have no label (first: {unlabelled[0]})", path=label_file,
                        fix="use the label file of the images that were run")
    return topk.result()
