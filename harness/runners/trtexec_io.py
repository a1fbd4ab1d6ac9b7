"""What TensorRT's trtexec prints, read back; nothing here needs TensorRT.

Layouts (samples/common/sampleReporting.cpp, NVIDIA/TensorRT release/7.0 to
main; cited samples: tests/fixtures/trtexec/README.md): 7.x prints ``Host
Latency`` / ``Enqueue Time`` / ``GPU Compute`` blocks of ``min: X ms`` lines
and no version; 8.0 - 8.5 a ``=== Performance summary ===`` of ``GPU Compute
Time: min = .. ms, ..., percentile(99%) = .. ms`` lines; 8.6 - 10.x the same
with percentiles 90/95/99.

The trap: ``Throughput: N qps`` counts queries, and with explicit batch (ONNX,
``--shapes``) a query is one batch; with an implicit-batch engine (``--batch=N``)
trtexec already multiplied by the batch. ``throughput_ips`` here is always
1000 x batch / GPU Compute Time mean (device scope); ``qps`` keeps trtexec's
figure and ``qps_counts`` says what it counts. (From a colleague's
standalone parser; tests in tests/test_trtexec_io.py.)
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from harness.errors import UserError, log_tail
from harness.runners.logtext import NUM, read_log

_NUM = NUM
_PREFIX = re.compile(r"^\s*(?:\[[^\]]*\]\s*)*")           # "[INFO] [05/27/2023-12:05:31] [I] " and the like
_RUNNING = re.compile(r"^&&&& RUNNING\s+\S+(?:\s+\[TensorRT v(\d+)\])?(?:\s+\[b\d+\])?\s*#\s*(.*)$")
_PASSED = re.compile(r"^&&&& (PASSED|FAILED|WAIVED)\b")
_BARE_CMD = re.compile(r"^\s*(?:\S*/)?trtexec(?:\.exe)?\s+--\S")
_VERSION_LINE = re.compile(r"TensorRT version:\s*([\d.]+)")
_V_TAG = re.compile(r"\[TensorRT v(\d+)\]")
_METRIC_LINE = re.compile(r"^(Latency|End-to-End Host Latency|Enqueue Time|H2D Latency|GPU Compute Time|D2H Latency):"
                          r"\s*(.*)$")
_PAIR = re.compile(rf"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\))\s*=\s*({_NUM})\s*ms")
_LEGACY_HEADS = {"host latency": "latency", "enqueue time": "enqueue_time", "gpu compute": "gpu_compute_time"}
_LEGACY_STAT = re.compile(rf"^(min|max|mean|median):\s*({_NUM})\s*ms(?:\s*\(end to end\s*({_NUM})\s*ms\))?\s*$")
_LEGACY_PCT = re.compile(rf"^percentile:\s*({_NUM})\s*ms at\s*(\d+(?:\.\d+)?)%"
                         rf"(?:\s*\(end to end\s*({_NUM})\s*ms at\s*\d+(?:\.\d+)?%\))?")
_KEYS = {"Latency": "latency", "End-to-End Host Latency": "end_to_end_host_latency", "Enqueue Time": "enqueue_time",
         "H2D Latency": "h2d_latency", "GPU Compute Time": "gpu_compute_time", "D2H Latency": "d2h_latency"}
_PRECISION_FLAGS = ("--fp16", "--int8", "--best", "--bf16", "--fp8", "--int4", "--noTF32", "--stronglyTyped")


def _pct_key(p: str) -> str:
    x = float(p)
    return f"p{int(x)}" if x == int(x) else f"p{x:g}"


def decode_version_tag(n: int | str) -> str:
    """NV_TENSORRT_VERSION as trtexec prints it ('[TensorRT v8601]') -> '8.6.1'.
    8.x/9.x: major*1000 + minor*100 + patch; 10.x on: major*10000 + minor*100 + patch."""
    n = int(n)
    if n >= 100000:
        return f"{n // 10000}.{(n // 100) % 100}.{n % 100}"
    return f"{n // 1000}.{(n // 100) % 10}.{n % 100}"


def parse_shapes_spec(spec: str) -> dict[str, list[int]]:
    """trtexec's shape spec -> {input name: dims}. 'image:8x3x224x224',
    'x:0:4x1x28x28' (names may hold colons), "'Input:0':1x3x9x9", 'a:1x2,b:3x4',
    'x=1x3' (the form trtexec logs), 'x:scalar'."""
    out: dict[str, list[int]] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        sep = "=" if "=" in item and ":" not in item.rsplit("=", 1)[1] else ":"
        name, _, dims = item.rpartition(sep)
        name = name.strip().strip("'\"").replace("\\'", "")
        dims = dims.strip()
        if not name:
            raise UserError(f"shape spec {item!r} has no input name (expected name:AxBxC)")
        if dims in ("", "scalar"):
            out[name] = []
            continue
        try:
            out[name] = [int(d) for d in dims.split("x")]
        except ValueError:
            raise UserError(f"shape spec {item!r}: dimensions must be integers joined by 'x'") from None
    return out


def _options(cmd: str | None) -> tuple[dict, list[str]]:
    """'--a=1 --b' -> ({'a': '1', 'b': True}, tokens)."""
    if not cmd:
        return {}, []
    try:
        tokens = shlex.split(cmd)
    except ValueError:
        tokens = cmd.split()
    opts: dict = {}
    for t in tokens:
        if t.startswith("--"):
            name, eq, val = t[2:].partition("=")
            opts[name] = val if eq else True
    return opts, tokens


def _empty_run() -> dict:
    return {
        "tool": "trtexec",
        "report_format": None,          # "legacy-7.x" | "summary-p99" (8.0-8.5) | "summary-multi-percentile" (8.6+)
        "tensorrt_version": None,
        "tensorrt_version_source": None,
        "command": None,
        "options": {},
        "precision": None,              # as logged: "FP32+FP16", or from the flags
        "precision_flags": [],
        "engine_loaded": False,
        "shapes": {},                   # inference shapes: {input: dims}
        "build_shapes": {},             # {input: {"min": dims, "opt": dims, "max": dims}}
        "batch_size": None,
        "batch_size_source": None,
        "implicit_batch": False,
        "streams": 1,
        "gpu_model": None,              # "Selected Device: Tesla T4" (TensorRT 8+)
        "warmup_queries": None,         # "Warmup completed N queries over M ms"
        "warmup_ms": None,
        "trace_queries": None,          # "Timing trace has N queries over S s"
        "gpu_compute_time_ms": None,    # {"min","max","mean","median","p90","p95","p99",...}
        "h2d_latency_ms": None,
        "d2h_latency_ms": None,
        "latency_ms": None,             # H2D + compute + D2H per query (host side)
        "end_to_end_host_latency_ms": None,
        "enqueue_time_ms": None,
        "qps": None,                    # trtexec's "Throughput: N qps", as printed
        "qps_counts": None,             # "inferences (batches of N)" or "images (implicit batch)"
        "throughput_ips": None,         # 1000 * batch / GPU Compute Time mean
        "throughput_source": None,
        "timing_scope": "device",
        "total_host_walltime_s": None,
        "total_gpu_compute_time_s": None,
        "gpu_busy_fraction": None,      # Total GPU Compute Time / Total Host Walltime
        "passed": None,
        "warnings": [],
    }


# (line pattern, field): the run's totals, as 8.x-10.x and as 7.x print them
_TOTALS = [(re.compile(rf"^Throughput:\s*({_NUM})\s*qps"), "qps"),
           (re.compile(rf"^Total Host Walltime:\s*({_NUM})\s*s"), "total_host_walltime_s"),
           (re.compile(rf"^Total GPU Compute Time:\s*({_NUM})\s*s"), "total_gpu_compute_time_s")]
_LEGACY_TOTALS = [(re.compile(rf"^throughput:\s*({_NUM})\s*qps"), "qps"),
                  (re.compile(rf"^walltime:\s*({_NUM})\s*s"), "total_host_walltime_s"),
                  (re.compile(rf"^total compute time:\s*({_NUM})\s*s"), "total_gpu_compute_time_s")]


def _total(r: dict, patterns, msg: str) -> str | None:
    """Store the total `msg` prints, if it is one; returns its field name."""
    for pattern, key in patterns:
        m = pattern.match(msg)
        if m:
            r[key] = float(m.group(1))
            return key
    return None


def _split_runs(text: str) -> list[str]:
    """One chunk per '&&&& RUNNING' (or bare 'trtexec --' command line)."""
    chunks: list[list[str]] = [[]]
    for line in text.splitlines():
        msg = _PREFIX.sub("", line) if not line.startswith("&&&&") else line
        starts = line.startswith("&&&& RUNNING") or (_BARE_CMD.match(msg) and not line.startswith("&&&&"))
        if starts and any(_is_report_line(x) for x in chunks[-1]):
            chunks.append([])
        chunks[-1].append(line)
    return ["\n".join(c) for c in chunks if c]


def _is_report_line(line: str) -> bool:
    msg = _PREFIX.sub("", line)
    return bool(_METRIC_LINE.match(msg) and _PAIR.search(msg)) or msg.strip() in ("GPU Compute", "Host Latency",
                                                                                  "Host latency")


def _parse_run(text: str, batch_size: int | None, where: str) -> dict:
    r = _empty_run()
    w = r["warnings"]
    legacy_section = None
    legacy: dict[str, dict] = {}
    logged_batch = None
    logged_streams = None
    inference_shapes: dict[str, list[int]] = {}
    binding_shapes: dict[str, list[int]] = {}
    for raw in text.splitlines():
        line = raw.rstrip("\r\n")
        if line.startswith("&&&&"):
            m = _RUNNING.match(line)
            if m:
                if m.group(1):
                    r["tensorrt_version"] = decode_version_tag(m.group(1))
                    r["tensorrt_version_source"] = f"[TensorRT v{m.group(1)}]"
                r["command"] = m.group(2).strip()
            m = _PASSED.match(line)
            if m:
                r["passed"] = m.group(1) == "PASSED"
                v = _V_TAG.search(line)
                if v and not r["tensorrt_version"]:
                    r["tensorrt_version"] = decode_version_tag(v.group(1))
                    r["tensorrt_version_source"] = f"[TensorRT v{v.group(1)}]"
            continue
        msg = _PREFIX.sub("", line).strip()
        if not msg:
            continue
        if r["command"] is None and _BARE_CMD.match(msg):
            r["command"] = msg
            continue
        m = _VERSION_LINE.search(msg)
        if m and "[TRT]" not in line:
            v = m.group(1)
            if "." not in v and v.isdigit():   # 8.0 printed the raw number: "TensorRT version: 8003"
                v = decode_version_tag(v)
            if r["tensorrt_version_source"] is None or not r["tensorrt_version_source"].startswith("[TensorRT"):
                r["tensorrt_version"], r["tensorrt_version_source"] = v, "TensorRT version line"
            continue
        m = re.match(r"^Selected Device:\s*(.+)$", msg)
        if m:
            r["gpu_model"] = m.group(1).strip()
            continue
        m = re.match(rf"^Warmup completed\s+(\d+)\s+queries over\s+({_NUM})\s*ms", msg)
        if m:
            r["warmup_queries"], r["warmup_ms"] = int(m.group(1)), float(m.group(2))
            continue
        m = re.match(r"^Timing trace has\s+(\d+)\s+queries", msg)
        if m:
            r["trace_queries"] = int(m.group(1))
            continue
        if msg.startswith("Precision:"):
            r["precision"] = msg.split(":", 1)[1].strip() or None
            continue
        if msg.startswith("Batch:"):
            val = msg.split(":", 1)[1].strip()
            if val.isdigit() and int(val) > 0:
                logged_batch = int(val)
            continue
        m = re.match(r"^(?:Inference )?Streams:\s*(\d+)", msg)
        if m:
            logged_streams = int(m.group(1))
            continue
        m = re.match(r"^Input inference shape\s*:\s*(.+)$", msg)
        if m:
            try:
                inference_shapes.update(parse_shapes_spec(m.group(1)))
            except UserError:
                pass
            continue
        m = re.match(r"^Created input binding for (.+) with dimensions (\d+(?:x\d+)*)$", msg)
        if m:
            binding_shapes[m.group(1)] = [int(d) for d in m.group(2).split("x")]
            continue
        m = re.search(r"Dynamic dimensions required for input: (.+?), but no shapes were provided\. "
                      r"Automatically overriding shape to: (\d+(?:x\d+)*)", msg)
        if m:
            binding_shapes.setdefault(m.group(1), [int(d) for d in m.group(2).split("x")])
            continue
        # 8.x+ summary lines
        m = _METRIC_LINE.match(msg)
        if m:
            pairs = _PAIR.findall(m.group(2))
            if pairs:
                d: dict = {}
                for key, pct, val in pairs:
                    d[_pct_key(pct) if pct else key] = float(val)
                r[_KEYS[m.group(1)] + "_ms"] = d
                legacy_section = None
            continue
        if _total(r, _TOTALS, msg):
            continue
        # 7.x blocks
        if msg.lower() in _LEGACY_HEADS:
            legacy_section = _LEGACY_HEADS[msg.lower()]
            legacy.setdefault(legacy_section, {})
            continue
        if legacy_section:
            m = _LEGACY_STAT.match(msg)
            if m:
                legacy[legacy_section][m.group(1)] = float(m.group(2))
                if m.group(3) is not None and legacy_section == "latency":
                    legacy.setdefault("end_to_end_host_latency", {})[m.group(1)] = float(m.group(3))
                continue
            m = _LEGACY_PCT.match(msg)
            if m:
                legacy[legacy_section][_pct_key(m.group(2))] = float(m.group(1))
                if m.group(3) is not None and legacy_section == "latency":
                    legacy.setdefault("end_to_end_host_latency", {})[_pct_key(m.group(2))] = float(m.group(3))
                continue
            key = _total(r, _LEGACY_TOTALS, msg)
            if key == "total_gpu_compute_time_s":  # the last line of a 7.x block
                legacy_section = None
                continue
    for key, d in legacy.items():
        if d:
            r[key + "_ms"] = d
    if r["gpu_compute_time_ms"] is None:
        return r
    gct = r["gpu_compute_time_ms"]
    if legacy:
        r["report_format"] = "legacy-7.x"
        if r["tensorrt_version"] is None:
            r["tensorrt_version_source"] = "report layout (TensorRT 7.x prints no version)"
    else:
        pcts = [k for k in gct if re.fullmatch(r"p\d+(?:\.\d+)?", k)]
        r["report_format"] = "summary-multi-percentile" if len(pcts) > 1 else "summary-p99"

    # the command line: precision flags, shapes, implicit batch, streams
    opts, _ = _options(r["command"])
    r["options"] = opts
    r["precision_flags"] = [f for f in _PRECISION_FLAGS if f[2:] in opts]
    if r["precision"] is None and r["command"] is not None:
        r["precision"] = "+".join(["FP32"] + [f[2:].upper() for f in r["precision_flags"]
                                              if f in ("--fp16", "--int8", "--bf16", "--fp8", "--int4")]) \
            if "best" not in opts else "BEST"
    r["engine_loaded"] = "loadEngine" in opts
    if r["engine_loaded"] and r["precision"]:
        w.append("the engine was loaded (--loadEngine): 'precision' lists this invocation's build flags, "
                 "not the precision the engine was built with")
    shapes = parse_shapes_spec(opts["shapes"]) if isinstance(opts.get("shapes"), str) else {}
    build = {}
    for key in ("minShapes", "optShapes", "maxShapes"):
        if isinstance(opts.get(key), str):
            for name, dims in parse_shapes_spec(opts[key]).items():
                build.setdefault(name, {})[key[:3]] = dims
    r["build_shapes"] = build
    if not shapes:
        shapes = inference_shapes or binding_shapes or {n: v["opt"] for n, v in build.items() if "opt" in v}
    r["shapes"] = shapes
    implicit = opts.get("batch")
    if isinstance(implicit, str) and implicit.isdigit():
        r["implicit_batch"], implicit_b = True, int(implicit)
    elif logged_batch:
        r["implicit_batch"], implicit_b = True, logged_batch
    else:
        implicit_b = None
    streams = opts.get("infStreams") or opts.get("streams")
    r["streams"] = int(streams) if isinstance(streams, str) and streams.isdigit() else (logged_streams or 1)

    # the batch
    shape_batch = None
    if shapes:
        firsts = {tuple(v)[:1] for v in shapes.values() if v}
        if len(firsts) == 1:
            shape_batch = next(iter(firsts))[0]
    found, found_src = (implicit_b, "--batch (implicit batch)") if implicit_b else \
        (shape_batch, "first dimension of the input shape") if shape_batch else (None, None)
    if batch_size:
        r["batch_size"], r["batch_size_source"] = int(batch_size), "argument"
        if found and found != int(batch_size):
            w.append(f"the log says batch {found} ({found_src}) but the caller says {batch_size}; "
                     f"the caller's batch is used")
    else:
        r["batch_size"], r["batch_size_source"] = found, found_src
    if r["batch_size"] is None:
        w.append("no batch size in the log (no --shapes, --batch or logged input shape): pass batch_size")

    # images/s: device scope, never the qps figure
    mean = gct.get("mean")
    if r["batch_size"] and mean and mean > 0:
        r["throughput_ips"] = 1000.0 * r["batch_size"] / mean
        r["throughput_source"] = "1000 * batch / GPU Compute Time mean"
    if r["qps"] is not None:
        if r["implicit_batch"]:
            r["qps_counts"] = "images (implicit batch: trtexec multiplies queries by --batch)"
        else:
            r["qps_counts"] = f"inferences (each a batch of {r['batch_size'] or '?'} with explicit batch)"
        if r["qps"] == 0:
            w.append("trtexec printed 'throughput: 0 qps': TensorRT 7.x multiplies by --batch, which is 0 for "
                     "explicit-batch (ONNX) runs; qps is not usable, throughput_ips is")
    tw, tg = r["total_host_walltime_s"], r["total_gpu_compute_time_s"]
    if tw and tg:
        r["gpu_busy_fraction"] = tg / tw
        if tg / tw < 0.8 and r["streams"] == 1:
            w.append(f"the GPU computed {tg / tw:.0%} of the wall time: the run was host-bound, so trtexec's qps "
                     f"is below what the device sustains (throughput_ips is device scope)")
    if r["streams"] > 1:
        w.append(f"{r['streams']} concurrent streams: 1000 * batch / GPU Compute Time mean counts one stream; "
                 f"the device may do more")
    return r


def parse_trtexec_runs(text: str, batch_size: int | None = None, *, where: str = "trtexec log") -> list[dict]:
    """Every run in a log (a sweep appends one '&&&& RUNNING ... &&&& PASSED'
    per run). Runs without a performance report (build-only) are skipped."""
    runs = [_parse_run(chunk, batch_size, where) for chunk in _split_runs(text)]
    return [r for r in runs if r["gpu_compute_time_ms"] is not None]


def parse_trtexec_log(text: str, batch_size: int | None = None, *, where: str = "trtexec log") -> dict:
    """The one performance report of a trtexec log (TensorRT 7.x to 10.x).

    `batch_size` is the batch of one inference; without it the batch comes
    from --batch (implicit) or the first dimension of --shapes / the logged
    input shape. Raises UserError naming `where` when the log has no report,
    or several (use parse_trtexec_runs)."""
    runs = parse_trtexec_runs(text, batch_size, where=where)
    if not runs:
        tail = log_tail(text, 8, empty="(nothing)")
        raise UserError("trtexec printed no performance report: expected '=== Performance summary ===' with "
                        "'GPU Compute Time: min = ... ms' (TensorRT 8+) or a 'GPU Compute' block (7.x); "
                        "last lines were:\n" + tail, path=where,
                        fix="run trtexec without --skipInference/--buildOnly and keep its whole stdout")
    if len(runs) > 1:
        raise UserError(f"{len(runs)} trtexec runs in one log (batches "
                        f"{[r['batch_size'] for r in runs]})", path=where,
                        fix="use parse_trtexec_runs() for a sweep, or pass one run's log")
    return runs[0]


def parse_trtexec_file(path: str | Path, batch_size: int | None = None) -> dict:
    text = read_log(path, fix="pass the stdout trtexec wrote")
    return parse_trtexec_log(text, batch_size, where=str(path))
