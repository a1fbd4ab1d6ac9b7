"""ONNX -> TensorRT engine with `trtexec`: one engine per batch size (static
shapes, or a profile whose min = opt = max is that batch), cached by what it
was built from, like the OM files (:mod:`harness.models.atc`).

An engine belongs to one GPU model and one TensorRT version, so both are in
its name with the ONNX's sha256, the precision, the batch and a hash of the
build flags. The exact build command is written beside it
(`<stem>.trtexec.json`) and returned, so a result can say how it was made.

Flag names are those of the published `trtexec --help` (TensorRT 10.16.1)
and, for the version switches, of sampleOptions.cpp on the 7.2 / 8.x
branches (sources: tests/fixtures/trtexec/README.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shlex
import subprocess
from pathlib import Path

from harness.errors import UserError, log_tail
from harness.fsio import move_into_place
from harness.models import command_record

TRTEXEC_FIX = ("install TensorRT and put its bin/ (which holds trtexec) on PATH, or run in one of NVIDIA's "
               "TensorRT container images (nvcr.io/nvidia/tensorrt), where trtexec is on PATH")


def _version_tuple(v) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1]) if len(v) > 1 else 0
    parts = str(v).split(".")
    return int(parts[0]), int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _dims(shape) -> str:
    return "x".join(str(int(d)) for d in shape)


def trtexec_command(onnx_path: str | Path, engine_path: str | Path, batch_size: int, input_name: str,
                    input_shape, precision: str = "fp16", warmup_ms: int = 500, duration_s: int = 10,
                    iterations: int = 100, *, avg_runs: int | None = 10, spin_wait: bool = True,
                    no_data_transfers: bool = False, workspace_mib: int | None = None,
                    tensorrt_version="10", trtexec: str = "trtexec", static: bool = False,
                    export_times: str | Path | None = None) -> dict[str, list[str]]:
    """{"build": [...], "run": [...]}: build an engine from an ONNX file with
    one static shape, then time it. Flag names are those of `trtexec --help`
    (TensorRT 10.16.1; tests/fixtures/trtexec/trt10.16.1_help.txt) and of
    sampleOptions.cpp on the 7.2 / 8.x branches for the version switches.

    `input_shape` is the per-sample shape (C, H, W) or the whole shape with
    the batch first; `precision` is fp32, fp16, int8 (int8 without a
    calibration cache times dummy scales: accuracy is meaningless), int8+fp16
    or best. `static`: the ONNX input already has this shape, so no shape
    flags are passed (trtexec warns about shapes given for a static model).
    `export_times`: a file for the per-inference trace (--exportTimes)."""
    major, minor = _version_tuple(tensorrt_version)
    shape = [int(d) for d in input_shape]
    if len(shape) == 4:
        if shape[0] != batch_size:
            raise UserError(f"input_shape {shape} starts with {shape[0]} but batch_size is {batch_size}",
                            fix="pass the per-sample shape (C, H, W) or a shape whose first dimension is the batch")
        full = shape
    else:
        full = [int(batch_size)] + shape
    if batch_size < 1 or any(d < 1 for d in full):
        raise UserError(f"static shapes only: {full} has a dimension below 1")
    if any(c in input_name for c in ", "):
        raise UserError(f"input name {input_name!r} holds a comma or a space, which trtexec's shape spec cannot take")
    spec = f"{input_name}:{_dims(full)}"
    if ":" in input_name:
        spec = f"'{input_name}':{_dims(full)}"
    prec = precision.lower().replace(" ", "")
    flags = {"fp32": [], "fp16": ["--fp16"], "int8": ["--int8"], "int8+fp16": ["--int8", "--fp16"],
             "fp16+int8": ["--int8", "--fp16"], "best": ["--best"]}
    if prec not in flags:
        raise UserError(f"precision {precision!r}: expected one of {sorted(flags)}")
    if major >= 11 and flags[prec]:
        raise UserError(f"TensorRT {major}.x has no --fp16/--int8/--best (networks are strongly typed)",
                        fix="export the ONNX in the precision wanted (e.g. FP16 weights and casts) and build "
                            "with precision='fp32'")
    shape_flags = [] if static else [f"--minShapes={spec}", f"--optShapes={spec}", f"--maxShapes={spec}"]
    build = [trtexec, f"--onnx={onnx_path}", f"--saveEngine={engine_path}", *shape_flags, *flags[prec]]
    if major == 7:
        build.insert(2, "--explicitBatch")
    if workspace_mib:
        build.append(f"--memPoolSize=workspace:{int(workspace_mib)}" if (major, minor) >= (8, 4)
                     else f"--workspace={int(workspace_mib)}")
    build.append("--skipInference" if (major, minor) >= (8, 6) else "--buildOnly")
    run = [trtexec, f"--loadEngine={engine_path}", *([] if static else [f"--shapes={spec}"]),
           f"--warmUp={int(warmup_ms)}", f"--duration={int(math.ceil(duration_s))}", f"--iterations={int(iterations)}"]
    if avg_runs:
        run.append(f"--avgRuns={int(avg_runs)}")
    if spin_wait and major < 11:
        run.append("--useSpinWait")
    if no_data_transfers and major < 11:
        run.append("--noDataTransfers")
    if (major, minor) >= (8, 6):
        run.append("--percentile=90,95,99")
    if export_times is not None:
        run.append(f"--exportTimes={export_times}")
    return {"build": build, "run": run}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "unknown"


def engine_stem(root: Path, onnx_sha256: str, gpu: str, tensorrt_version: str, precision: str, batch_size: int,
                build_argv: list[str]) -> Path:
    """Where the engine for these inputs lives. The flags' hash leaves out the
    paths (they hold the stem itself) so a changed flag makes a new engine."""
    flags = [a for a in build_argv[1:] if not a.startswith(("--onnx=", "--saveEngine="))]
    h = hashlib.sha256(json.dumps(flags).encode()).hexdigest()[:8]
    return root / "trt" / (f"{onnx_sha256[:16]}_{_slug(gpu)}_trt{_slug(tensorrt_version)}_{precision}"
                           f"_bs{batch_size}_{h}")


def engine_path(stem: Path) -> Path:
    return Path(f"{stem}.plan")


def record_path(stem: Path) -> Path:
    return Path(f"{stem}.trtexec.json")


def build(cmd: list[str], stem: Path, *, record: dict | None = None, run=subprocess.run,
          timeout_s: float | None = None) -> Path:
    """Run trtexec's build; on failure raise UserError with the command and its
    log's tail. The engine is written under a temporary name and renamed, so
    a killed build leaves no half engine behind to be taken for a cached one."""
    plan = engine_path(stem)
    plan.parent.mkdir(parents=True, exist_ok=True)
    tmp = plan.with_suffix(".plan.part")
    argv = [f"--saveEngine={tmp}" if a.startswith("--saveEngine=") else a for a in cmd]
    try:
        p = run(argv, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        tmp.unlink(missing_ok=True)
        raise UserError(f"trtexec's engine build ran past {timeout_s:g} s: {shlex.join(cmd)}", path=plan,
                        fix="raise the target's timing max_duration_s, or build the engine by hand") from None
    if p.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        tail = log_tail((p.stdout or "") + (p.stderr or ""), 20, empty="(trtexec printed nothing)")
        why = f"exit {p.returncode}" if p.returncode != 0 else "exit 0 but no engine was written"
        raise UserError(f"trtexec failed to build the engine ({why}): {shlex.join(cmd)}\n{tail}", path=plan,
                        fix="read trtexec's log above (an operator TensorRT cannot parse, or too little GPU "
                            "memory, are the usual causes); add --verbose by hand for more")
    move_into_place(tmp, plan)
    command_record.write(record_path(stem), cmd, **(record or {}))
    return plan


def recorded_command(stem: Path) -> str | None:
    """The command an existing engine was built with, if the harness built it."""
    return command_record.command(record_path(stem))
