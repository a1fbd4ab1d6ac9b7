"""NVIDIA GPUs through TensorRT's `trtexec`, timed on the device.

`load` builds one engine per batch size from the case's ONNX file (static
shapes, or one profile whose min = opt = max is the batch) in the target's
precision, cached by what it was built from (:mod:`harness.models.tensorrt`).
The throughput stage then runs trtexec once: it warms up for `warmup_ms`,
runs at least `min_iterations` inferences and `min_duration_s` seconds
(trtexec's own --iterations / --duration rule, the same as the harness's),
and exports every inference's timings (--exportTimes). The harness's timing
engine summarises the per-inference GPU Compute Times, so throughput is
1000 x batch / GPU Compute Time mean: device scope, like ais_bench's NPU
compute time, and never trtexec's qps (which counts batches).

H2D/D2H, host and end-to-end latency percentiles, the TensorRT version and
the GPU model go into the result's metrics (`trtexec`, `tensorrt_version`).

trtexec comes with TensorRT (its bin/ folder) and with NVIDIA's TensorRT
container images; where it is absent, cases skip saying so.

Options (target `options:`): `trtexec` (path or name, default "trtexec"),
`warmup_ms` (default 500), `spin_wait` (default true), `no_data_transfers`
(default false: H2D/D2H are timed, but outside GPU Compute Time either way),
`workspace_mib`, `tensorrt_version` (used only when trtexec prints none, 7.x),
`build_timeout_s` (default 1800).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.errors import CaseSkipped, UserError, log_tail
from harness.models import tensorrt
from harness.models.cache import CACHE_ENV, sha256_file
from harness.runners import devices
from harness.runners import trtexec_io as io
from harness.runners.base import Runner
from harness.vocab import GPU_FAMILIES

_V_TAG = re.compile(r"\[TensorRT v(\d+)\]")
# target precision -> trtexec's precision flags (harness/models/tensorrt.py)
_PRECISION = {"fp32": "fp32", "fp16": "fp16", "int8": "int8+fp16", "mixed": "best"}
# trtexec's summary and the trace are the same numbers printed to ~6 digits
_AGREE_REL = 1e-3


def version_from_text(text: str) -> str | None:
    """'&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # ...' -> '8.6.1'; None
    when no tag is printed (TensorRT 7.x)."""
    m = _V_TAG.search(text or "")
    return io.decode_version_tag(m.group(1)) if m else None


# --exportTimes keys: 8.x and later name the copies h2d/d2h, 7.x in/out.
_TRACE_KEYS = {"compute_ms": ("computeMs",), "h2d_ms": ("h2dMs", "inMs"), "d2h_ms": ("d2hMs", "outMs"),
               "latency_ms": ("latencyMs",), "end_to_end_ms": ("endToEndMs",)}


def read_times(path: str | Path, warmup_ms: float) -> dict[str, list[float]]:
    """The per-inference trace trtexec writes with --exportTimes, warm-up left
    out: {"compute_ms": [...], "h2d_ms": [...], ...}.

    Releases up to 8.5 export the warm-up queries too (sampleReporting.cpp's
    exportJSONTrace(trace, file)); later ones skip them (exportJSONTrace(trace,
    file, nbWarmups)). trtexec's own rule tells them apart either way: the
    first query whose compute starts at or after the warm-up time is the
    first timed one."""

    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("trtexec wrote no timing trace", path=p,
                        fix="check that this trtexec supports --exportTimes (TensorRT 7 and later do)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"unreadable trtexec timing trace: {exc}", path=p) from None
    rows = [d for d in doc if isinstance(d, dict) and "computeMs" in d] if isinstance(doc, list) else []
    if not rows:
        raise UserError("the trtexec timing trace holds no query with computeMs", path=p,
                        fix="run trtexec with --exportTimes=FILE and without --skipInference")
    first = next((i for i, d in enumerate(rows) if float(d.get("startComputeMs", warmup_ms)) >= warmup_ms), None)
    rows = rows[first:] if first is not None else []
    if not rows:
        raise UserError(f"every query of the trtexec trace started within the {warmup_ms:g} ms warm-up", path=p)
    out: dict[str, list[float]] = {}
    for key, names in _TRACE_KEYS.items():
        name = next((n for n in names if n in rows[0]), None)
        if name is not None:
            out[key] = [float(d[name]) for d in rows]
    return out


_SUMMARY_KEYS = ("report_format", "tensorrt_version", "command", "precision", "batch_size", "shapes",
                 "gpu_compute_time_ms", "h2d_latency_ms", "d2h_latency_ms", "latency_ms",
                 "end_to_end_host_latency_ms", "enqueue_time_ms", "qps", "qps_counts", "throughput_source",
                 "total_host_walltime_s", "total_gpu_compute_time_s", "gpu_busy_fraction", "warmup_queries",
                 "warmup_ms", "streams", "warnings")


def run_metrics(run: dict) -> dict:
    """A parsed trtexec run as result metrics: trtexec's own report under
    `trtexec` (its host `latency_ms` is H2D + compute + D2H, not the harness's
    metric of that name), and flat copies of what reports show."""
    gct = run.get("gpu_compute_time_ms") or {}
    m = {"trtexec": {k: run.get(k) for k in _SUMMARY_KEYS if run.get(k) not in (None, [], {})},
         "tensorrt_version": run.get("tensorrt_version"), "gpu_model": run.get("gpu_model"),
         "gpu_compute_time_ms": gct or None, "h2d_latency_ms": run.get("h2d_latency_ms"),
         "d2h_latency_ms": run.get("d2h_latency_ms"),
         "end_to_end_host_latency_ms": run.get("end_to_end_host_latency_ms")}
    return {k: v for k, v in m.items() if v is not None}


def _onnx_input(path: Path) -> tuple[str, list]:
    """The ONNX graph's first real input: its name and dims (a str or None for a free dim)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in inits)
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in inp.type.tensor_type.shape.dim]
    return inp.name, dims


class TrtexecRunner(Runner):
    name = "trtexec"
    formats = ("onnx",)
    devices = GPU_FAMILIES
    timing_scope = "device"

    @classmethod
    def unavailable(cls, options: dict | None = None, device: str | None = None) -> str | None:
        exe = (options or {}).get("trtexec") or "trtexec"
        if shutil.which(exe) is None:
            return f"trtexec not found ({exe!r} is not on PATH): {tensorrt.TRTEXEC_FIX}"
        return None

    def __init__(self, device, device_id=0, precision="fp32", options=None):
        super().__init__(device, device_id, precision, options)
        self._metrics: dict = {}
        self._run = subprocess.run  # tests put a fake trtexec here

    # -- build ------------------------------------------------------------------------
    def _probe_version(self, exe: str) -> tuple[str, str]:
        try:
            p = self._run([exe, "--help"], capture_output=True, text=True, timeout=60)
            found = version_from_text((p.stdout or "") + (p.stderr or ""))
        except (OSError, subprocess.TimeoutExpired):
            found = None
        if found:
            return found, "trtexec --help"
        given = self.options.get("tensorrt_version")
        if given:
            return str(given), "options.tensorrt_version"
        return "7", "no version tag in trtexec --help (TensorRT 7.x prints none)"

    def _command(self, engine, *, times=None, duration_s=3, iterations=10, warmup_ms=500) -> dict:
        return tensorrt.trtexec_command(
            self.onnx, engine, self.shape[0], self.input_name, self.shape, _PRECISION[self.precision],
            warmup_ms, duration_s, iterations, spin_wait=bool(self.options.get("spin_wait", True)),
            no_data_transfers=bool(self.options.get("no_data_transfers", False)),
            workspace_mib=self.options.get("workspace_mib"), tensorrt_version=self.trt_version,
            trtexec=self.exe, static=self.static, export_times=times)

    def load(self, artifact, input_shape):
        why = self.unavailable(self.options)
        if why:
            raise CaseSkipped(why)
        self.exe = shutil.which(self.options.get("trtexec") or "trtexec")
        self.onnx = Path(artifact)
        if not self.onnx.is_file():
            raise UserError("ONNX file not found", path=self.onnx, fix="export the model to ONNX first")
        if self.precision not in _PRECISION:
            raise UserError(f"precision {self.precision!r} has no trtexec flags", fix=f"use one of {list(_PRECISION)}")
        self.shape = tuple(int(d) for d in input_shape)
        self.input_name, dims = _onnx_input(self.onnx)
        fixed = [isinstance(d, int) and d > 0 for d in dims]
        self.static = bool(dims) and all(fixed)
        if len(dims) != len(self.shape) or any(f and d != w for f, d, w in zip(fixed, dims, self.shape)):
            raise UserError(f"ONNX input {self.input_name!r} is fixed at {dims}, asked to run {list(self.shape)}",
                            path=self.onnx, fix="export the model for this batch size, or with a free batch dim")
        self.trt_version, version_source = self._probe_version(self.exe)
        self.gpu = devices.device_model(self.device) or "unknown-gpu"
        onnx_sha = sha256_file(self.onnx)
        root = Path(self.options.get("artifact_cache") or os.environ.get(CACHE_ENV) or ".harness/cache")
        stem = tensorrt.engine_stem(root, onnx_sha, self.gpu, self.trt_version, self.precision, self.shape[0],
                                    self._command("ENGINE")["build"])
        self.engine = tensorrt.engine_path(stem)
        build_cmd = self._command(self.engine)["build"]
        cached = self.engine.is_file()
        t0 = time.perf_counter()
        if not cached:
            tensorrt.build(build_cmd, stem, run=self._run, timeout_s=float(self.options.get("build_timeout_s", 1800)),
                           record={"tensorrt_version": self.trt_version, "gpu_model": self.gpu, "onnx_sha256": onnx_sha})
        self._metrics.update(
            artifact_command=(tensorrt.recorded_command(stem) if cached else None) or shlex.join(build_cmd),
            source_sha256=onnx_sha, engine_sha256=sha256_file(self.engine), engine_cached=cached,
            engine_build_s=None if cached else round(time.perf_counter() - t0, 3),
            tensorrt_version=self.trt_version, tensorrt_version_source=version_source, gpu_model=self.gpu,
            trtexec_precision=_PRECISION[self.precision])
        if self.precision == "int8":
            self._metrics["trtexec_note"] = ("int8 without a calibration cache: TensorRT uses placeholder "
                                             "scales, so the speed is int8's but the outputs are not meaningful")

    # -- time -------------------------------------------------------------------------
    def measure_device(self, batch: np.ndarray, config) -> dict:
        """One trtexec run under the suite's timing: per-inference GPU compute
        times (ms), warm-up left out, for the harness's timing engine."""
        if tuple(batch.shape) != self.shape:
            raise UserError(f"batch of shape {tuple(batch.shape)} given to an engine built for {self.shape}",
                            path=self.engine)
        warmup_ms = float(self.options.get("warmup_ms", 500))
        tmp = Path(tempfile.mkdtemp(prefix="harness-trtexec-"))
        try:
            times_file = tmp / "times.json"
            cmd = self._command(self.engine, times=times_file, duration_s=config.min_duration_s,
                                iterations=config.min_iterations, warmup_ms=warmup_ms)["run"]
            # trtexec stops by itself; the limit only catches a hung process
            limit = config.max_duration_s + warmup_ms / 1000 + 120
            try:
                p = self._run(cmd, capture_output=True, text=True, timeout=limit)
            except subprocess.TimeoutExpired:
                raise UserError(f"trtexec ran past {limit:g} s: {shlex.join(cmd)}", path=self.engine) from None
            text = (p.stdout or "") + (p.stderr or "")
            if p.returncode != 0:
                tail = log_tail(text)
                raise UserError(f"trtexec exited {p.returncode}: {shlex.join(cmd)}\n{tail}", path=self.engine,
                                fix="read trtexec's log above; delete the engine to rebuild it if TensorRT "
                                    "or the driver changed")
            run = io.parse_trtexec_log(text, batch_size=self.shape[0], where=f"stdout of {shlex.join(cmd)}")
            trace = read_times(times_file, warmup_ms)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        compute = trace["compute_ms"]
        mean, printed = float(np.mean(compute)), run["gpu_compute_time_ms"].get("mean")
        if printed and abs(mean - printed) > _AGREE_REL * printed + 1e-4:
            raise UserError(f"trtexec's trace (mean {mean:.6g} ms over {len(compute)} inferences) and its summary "
                            f"(GPU Compute Time mean {printed:g} ms) disagree: {shlex.join(cmd)}", path=self.engine,
                            fix="report this with the trtexec version; the warm-up split may differ")
        warnings = list(run["warnings"])
        if run.get("warmup_queries") is not None and run["warmup_queries"] < config.warmup:
            warnings.append(f"trtexec's {warmup_ms:g} ms warm-up ran {run['warmup_queries']} inferences, fewer "
                            f"than the suite's warmup of {config.warmup}: raise options.warmup_ms")
        run["warnings"] = warnings
        self._metrics.update(run_metrics(run))
        self._metrics["gpu_model"] = run.get("gpu_model") or self.gpu
        self._metrics["tensorrt_version"] = run.get("tensorrt_version") or self.trt_version
        self._metrics["trtexec"]["run_command"] = shlex.join(cmd)
        self._metrics["trtexec"]["trace_inferences"] = len(compute)
        return {"device_ms": compute, "warmup_iterations": int(run.get("warmup_queries") or 0),
                "warmup_s": float(run.get("warmup_ms") or warmup_ms) / 1000,
                "duration_s": float(run.get("total_host_walltime_s") or sum(compute) / 1000)}

    def run(self, batch):
        raise UserError("the trtexec runner times engines and returns no logits, so it serves the throughput "
                        "stage only", fix="run parity/accuracy on GPU with the onnxruntime runner "
                                          "(TensorrtExecutionProvider)")

    def extra_metrics(self) -> dict:
        return dict(self._metrics)

    def version(self):
        return f"TensorRT {getattr(self, 'trt_version', 'unknown')}"
