"""Ascend 310/310P OM inference through ais_bench.

Uses ais_bench's Python API (`ais_bench.infer.interface.InferSession`) when it
imports; otherwise its command line (`python3 -m ais_bench`), one process per
batch, reading the NPU compute time from the `*_summary.json` it writes and
the logits from its NPY output files. ais_bench (with its aclruntime backend)
is installed from Ascend's tools repository on a CANN host; it is not on
PyPI (the PyPI package `ais-bench-benchmark` is an unrelated tool).

Its timings are the NPU's own compute times, so the timing scope is "device".

Options (target `options:` in the suite): `ais_bench_mode: auto | api | cli`,
`python` (the interpreter the CLI runs under), `warmup_count` (CLI, per
process; ais_bench's default 1), `dynamic_batch` (set by the harness for a
dynamic-batch OM: the batch is picked with --dymBatch / set_dynamic_batchsize).
"""

from __future__ import annotations

import importlib.metadata
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from harness.errors import UserError, log_tail
from harness.runners import ais_bench_io as out
from harness.runners.base import Runner
from harness.vocab import NPU_FAMILIES

INSTALL_FIX = ("on a CANN host, install ais_bench and aclruntime from Ascend's tools repository "
               "(source /usr/local/Ascend/ascend-toolkit/set_env.sh first)")


def _import_api():
    try:
        from ais_bench.infer.interface import InferSession
    except ImportError:
        return None
    return InferSession


def check_shape(declared, wanted, *, dynamic: bool, artifact) -> None:
    """Refuse an OM whose input does not take the batch asked for."""
    declared, wanted = [int(d) for d in declared], [int(d) for d in wanted]
    if not declared:
        return
    if dynamic:
        if declared[1:] != wanted[1:]:
            raise UserError(f"OM input shape is {declared}, asked to run {wanted}", path=artifact,
                            fix="convert the ONNX model with atc for this input size")
        return
    if declared[0] < 0:
        raise UserError(f"OM input shape is {declared}: a dynamic-batch OM, but the target is static", path=artifact,
                        fix="set dynamic_batch on the target, or convert a static OM for this batch size")
    if declared != wanted:
        raise UserError(f"OM input shape is {declared}, asked to run {wanted} (batch {wanted[0]})", path=artifact,
                        fix=f"convert the ONNX model with atc for batch {wanted[0]} "
                            f"(--input_shape=\"image:{','.join(map(str, wanted))}\")")


class _Api:
    """InferSession: one session for the whole case."""

    def __init__(self, cls, device_id: int, artifact: Path, shape, dynamic: bool):
        self.session = cls(device_id, str(artifact))
        check_shape(self.session.get_inputs()[0].shape, shape, dynamic=dynamic, artifact=artifact)
        self.mode = "static"
        if dynamic:
            self.mode = "dymbatch"
            if hasattr(self.session, "set_dynamic_batchsize"):
                self.session.set_dynamic_batchsize(int(shape[0]))
        self.runs = 0

    def run(self, batch):
        res = self.session.infer([batch], mode=self.mode)
        self.runs += 1
        return np.asarray(res[0])

    def device_times_ms(self):
        # ais_bench keeps one entry per infer() call since the session began;
        # releases name the accessor `sumary` (sic) or `summary`.
        get = getattr(self.session, "summary", None) or getattr(self.session, "sumary")
        times = list(get().exec_time_list)
        return [float(t) for t in times[-self.runs:]] if self.runs else []

    def close(self):
        release = getattr(self.session, "finalize", None) or getattr(self.session, "free_resource", None)
        if release is not None:
            release()


class _Cli:
    """`python3 -m ais_bench`, one process per batch: slow to start, but the
    device time it reports is the NPU's own, as with the API."""

    def __init__(self, device_id: int, artifact: Path, shape, dynamic: bool, options: dict, run=subprocess.run):
        self.python = options.get("python") or "python3"
        if shutil.which(self.python) is None:
            raise UserError(f"{self.python} not found on PATH", fix=INSTALL_FIX)
        self.device_id, self.artifact, self.shape, self.dynamic = device_id, artifact, tuple(shape), dynamic
        self.warmup_count = options.get("warmup_count")
        probe = [self.python, "-c", "import ais_bench"]
        p = run(probe, capture_output=True, text=True)
        if p.returncode != 0:
            last = log_tail((p.stdout or "") + (p.stderr or ""), 1)
            raise UserError(f"ais_bench is not installed for {self.python} ({shlex.join(probe)}: {last})",
                            fix=INSTALL_FIX)
        self.tmp = Path(tempfile.mkdtemp(prefix="harness-ais_bench-"))
        self._run = run
        self.times: list[float] = []
        self.last: out.AisBenchSummary | None = None
        self.n = 0

    def command(self, input_path: Path, dirname: str) -> list[str]:
        return out.build_command(self.artifact, input=input_path, output=self.tmp, output_dirname=dirname,
                                 outfmt="NPY", loop=1, warmup_count=self.warmup_count, device=self.device_id,
                                 dym_batch=self.shape[0] if self.dynamic else None, python=self.python)

    def run(self, batch):
        if tuple(batch.shape) != self.shape:
            raise UserError(f"batch of shape {tuple(batch.shape)} given to an OM loaded for {self.shape}",
                            path=self.artifact)
        self.n += 1
        name = f"run{self.n}"
        inp = self.tmp / f"{name}_in"
        inp.mkdir()
        np.save(inp / "batch.npy", np.ascontiguousarray(batch))
        cmd = self.command(inp / "batch.npy", name)
        p = self._run(cmd, capture_output=True, text=True)
        text = (p.stdout or "") + (p.stderr or "")
        if p.returncode != 0:
            tail = log_tail(text)
            raise UserError(f"ais_bench exited {p.returncode}: {shlex.join(cmd)}\n{tail}", path=self.artifact,
                            fix="read ais_bench's log above (a batch size the OM was not converted for, or "
                                "a missing CANN environment, are the usual causes)")
        summary_file = self.tmp / f"{name}_summary.json"
        summary = out.parse_summary_json(summary_file) if summary_file.is_file() else \
            out.parse_stdout(text, where=f"stdout of {shlex.join(cmd)}")
        times = summary.npu_compute_times_ms or ([summary.npu_compute_time.mean] if summary.npu_compute_time
                                                 else [])
        if not times:
            raise UserError(f"ais_bench reported no NPU compute time: {shlex.join(cmd)}", path=summary.source,
                            fix="check the ais_bench version (it should print NPU_compute_time)")
        self.times.append(float(np.mean(times)))
        self.last = summary
        logits = out.read_outputs(self.tmp / name)["batch"]
        if logits.shape[0] != self.shape[0]:
            raise UserError(f"ais_bench returned {logits.shape[0]} rows for a batch of {self.shape[0]}",
                            path=self.artifact, fix="the OM's batch does not match; re-convert it with atc")
        shutil.rmtree(inp, ignore_errors=True)
        return logits

    def device_times_ms(self):
        return list(self.times)

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


class AisBenchRunner(Runner):
    name = "ais_bench"
    formats = ("om",)
    devices = NPU_FAMILIES
    timing_scope = "device"

    def load(self, artifact, input_shape):
        artifact = Path(artifact)
        if not artifact.is_file():
            raise UserError("OM file not found", path=artifact, fix="convert it with atc (harness does on a CANN host)")
        dynamic = bool(self.options.get("dynamic_batch"))
        mode = self.options.get("ais_bench_mode", "auto")
        if mode not in ("auto", "api", "cli"):
            raise UserError(f"ais_bench_mode {mode!r}: use auto, api or cli")
        cls = _import_api() if mode != "cli" else None
        if cls is None and mode == "api":
            raise UserError("ais_bench's Python API (ais_bench.infer.interface) is not importable", fix=INSTALL_FIX)
        if cls is not None:
            self.backend = _Api(cls, self.device_id, artifact, input_shape, dynamic)
        else:
            self.backend = _Cli(self.device_id, artifact, input_shape, dynamic, self.options)
        self.mode = "api" if cls is not None else "cli"

    def run(self, batch):
        return self.backend.run(batch)

    def device_times_ms(self):
        return self.backend.device_times_ms()

    def version(self):
        for dist in ("ais_bench", "ais-bench", "aclruntime"):
            try:
                return importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
        return "unknown"

    def close(self):
        backend = getattr(self, "backend", None)
        if backend is not None:
            backend.close()
            self.backend = None
