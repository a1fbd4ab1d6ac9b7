"""What ais_bench writes, read back: its console summary, its `*_summary.json`,
and its output tensors (TXT/NPY), plus the command line that produces them.

Written from the formats in REFERENCE.md, accepting every documented variant:

- `throughput 1000*batchsize(B)/NPU_compute_time.mean(M): T` (older releases)
  and `throughput 1000*batchsize.mean(B)/...` (later ones);
- the mean-only `NPU_compute_time (ms): mean = X` of multi-thread releases
  (throughput then follows from the batch size: 1000 x B / X);
- per-device lines `i:{} device_{} throughput:{} start_time:{} end_time:{}` and
  the closing `summary throughput:{}` of multi-device runs;
- `H2D_latency` / `D2H_latency` lines (with `--display_all_summary 1`).

Nothing here needs ais_bench installed: the parsers take text and files.
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

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf"
_STATS_LINE = re.compile(r"\b(NPU_compute_time|H2D_latency|D2H_latency)\s*\(ms\)\s*:\s*(.*)$")
_STAT_PAIR = re.compile(rf"(min|max|mean|median|percentile\(\d+%\)|count)\s*=\s*({_NUM})")
_THROUGHPUT = re.compile(
    rf"throughput\s+1000\*batchsize(?:\.mean)?\(({_NUM})\)\s*/\s*NPU_compute_time\.mean\(({_NUM})\)\s*:\s*({_NUM})")
_PER_DEVICE = re.compile(rf"i:(\d+)\s+device_(\d+)\s+throughput:({_NUM})\s+start_time:(\S+)\s+end_time:(\S+)")
_SUMMARY_THROUGHPUT = re.compile(rf"summary throughput:\s*({_NUM})")

STAT_KEYS = {"min": "min", "max": "max", "mean": "mean", "median": "median", "percentile(99%)": "p99",
             "count": "count"}


@dataclass
class Stats:
    """One `... (ms): min = .., max = .., mean = ..` line or summary-JSON block."""

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


def _num(text: str) -> float:
    return float(text)


def _stats(pairs: dict[str, float], where: str) -> Stats:
    if "mean" not in pairs:
        raise UserError(f"ais_bench statistics without a mean: {pairs}", path=where,
                        fix="pass the whole ais_bench output or summary file")
    count = pairs.get("count")
    return Stats(mean=pairs["mean"], min=pairs.get("min"), max=pairs.get("max"), median=pairs.get("median"),
                 p99=pairs.get("p99"), count=int(count) if count is not None and math.isfinite(count) else None)


def parse_stdout(text: str, *, where: str = "ais_bench output") -> AisBenchSummary:
    """Read ais_bench's console summary. Raises UserError when it holds no
    performance figure at all (a crashed or foreign run)."""
    s = AisBenchSummary(source=where)
    for line in text.splitlines():
        m = _STATS_LINE.search(line)
        if m:
            pairs = {STAT_KEYS[k]: _num(v) for k, v in _STAT_PAIR.findall(m.group(2))}
            attr = {"NPU_compute_time": "npu_compute_time", "H2D_latency": "h2d_latency",
                    "D2H_latency": "d2h_latency"}[m.group(1)]
            setattr(s, attr, _stats(pairs, where))
            continue
        m = _THROUGHPUT.search(line)
        if m:
            s.batch_size, s.throughput_ips = _num(m.group(1)), _num(m.group(3))
            if s.npu_compute_time is None:
                s.npu_compute_time = Stats(mean=_num(m.group(2)))
            continue
        m = _PER_DEVICE.search(line)
        if m:
            s.per_device.append(DeviceThroughput(int(m.group(1)), int(m.group(2)), _num(m.group(3)),
                                                 m.group(4), m.group(5)))
            continue
        m = _SUMMARY_THROUGHPUT.search(line)
        if m:
            s.summary_throughput_ips = _num(m.group(1))
    if s.npu_compute_time is None and s.throughput_ips is None and s.summary_throughput_ips is None \
            and not s.per_device:
        tail = "\n".join(text.strip().splitlines()[-10:]) or "(nothing)"
        raise UserError(
            "ais_bench printed no performance summary: expected an 'NPU_compute_time (ms): ... mean = X' line, "
            "a 'throughput 1000*batchsize...' line or a 'summary throughput:' line; last lines were:\n" + tail,
            path=where, fix="check that ais_bench ran to the end (its log above says why not)")
    return s


def parse_summary_json(path: str | Path) -> AisBenchSummary:
    """Read an ais_bench `<name>_summary.json`."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("ais_bench summary file not found", path=p,
                        fix="ais_bench writes <output>/<output_dirname>_summary.json; pass that file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"not JSON: {exc}", path=p, fix="pass the *_summary.json ais_bench wrote") from None
    if not isinstance(raw, dict) or "NPU_compute_time" not in raw:
        keys = ", ".join(sorted(raw)[:8]) if isinstance(raw, dict) else type(raw).__name__
        raise UserError(f"not an ais_bench summary: no 'NPU_compute_time' key (found: {keys})", path=p,
                        fix="pass the *_summary.json ais_bench wrote beside its output folder")
    s = AisBenchSummary(source=str(p))
    for key, attr in (("NPU_compute_time", "npu_compute_time"), ("H2D_latency", "h2d_latency"),
                      ("D2H_latency", "d2h_latency")):
        block = raw.get(key)
        if isinstance(block, dict) and block:
            pairs = {STAT_KEYS[k]: float(v) for k, v in block.items() if k in STAT_KEYS and v is not None}
            if "mean" in pairs:
                setattr(s, attr, _stats(pairs, str(p)))
    if raw.get("throughput") is not None:
        s.throughput_ips = float(raw["throughput"])
    s.npu_compute_times_ms = [float(x) for x in raw.get("npu_compute_time_list") or []]
    args = raw.get("args")
    s.args = args if isinstance(args, dict) else {}
    b = s.args.get("dymBatch") or s.args.get("batchsize")
    try:
        s.batch_size = float(b) if b else None
    except (TypeError, ValueError):
        s.batch_size = None
    if s.npu_compute_time is None and s.throughput_ips is None:
        raise UserError("ais_bench summary holds no NPU_compute_time mean and no throughput", path=p,
                        fix="the run probably failed before timing anything; re-run ais_bench")
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
