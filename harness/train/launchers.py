"""Several devices through each framework's own launcher, never a home-made one:
``torchrun`` for the PyTorch path, ``msrun`` (MindSpore's dynamic cluster) for
the MindSpore path. The worker is this harness's training module; rank 0
writes its result as JSON, which the stage reads back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.errors import CaseSkipped, UserError
from harness.fsio import write_text
from harness.train.common import is_out_of_memory

WORKER = "harness.train.worker"
LAUNCHERS = {"torch": "torchrun", "mindspore": "msrun"}


def command(framework: str, nproc: int, plan_path: Path, *, port: int = 29517, log_dir: Path | None = None) -> list[str]:
    """The launcher's command line for ``nproc`` processes on this host."""
    worker = ["-m", WORKER, str(plan_path)]
    if framework == "torch":
        return ["torchrun", "--standalone", f"--nproc_per_node={nproc}", "--no-python", sys.executable, *worker]
    # msrun: one node, nproc workers, the scheduler on this host (MindSpore's "msrun" startup)
    # (msrun starts `python TASK_SCRIPT ARGS` itself: it is given the worker's file)
    script = str(Path(__file__).with_name("worker.py"))
    return ["msrun", f"--worker_num={nproc}", f"--local_worker_num={nproc}", "--master_addr=127.0.0.1",
            f"--master_port={port}", "--join=True", f"--log_dir={log_dir or plan_path.parent / 'msrun_log'}",
            script, str(plan_path)]


def isolated(plan: dict, *, timeout_s: float = 600.0, run=subprocess.run) -> dict:
    """Run a 1-process ``plan`` in a child process of its own (no launcher), so the
    framework's memory and threads leave with it instead of staying in the
    harness's process for the rest of the run; its result."""
    return launch(plan, timeout_s=timeout_s, run=run, single=True)


def launch(plan: dict, *, timeout_s: float = 600.0, which=shutil.which, run=subprocess.run,
           single: bool = False) -> dict:
    """Run ``plan`` on ``plan['num_devices']`` processes; rank 0's result
    (``single``: one plain child process, no launcher)."""
    framework, nproc = plan["framework"], 1 if single else int(plan["num_devices"])
    tool = "python" if single else LAUNCHERS[framework]
    if not single and which(tool) is None:
        raise CaseSkipped(f"{tool} not found on PATH (it comes with "
                          f"{'torch' if framework == 'torch' else 'mindspore'}): cannot start {nproc} processes")
    with tempfile.TemporaryDirectory(prefix="harness-train-") as tmp:
        tmp = Path(tmp)
        result = tmp / "result.json"
        plan = {**plan, "result_path": str(result), "single_process": single}
        write_text(tmp / "plan.json", json.dumps(plan))
        cmd = ([sys.executable, "-m", WORKER, str(tmp / "plan.json")] if single
               else command(framework, nproc, tmp / "plan.json", log_dir=tmp / "msrun_log"))
        # the workers import this very harness (not another copy on the path)
        here = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)}
        proc = run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
        if proc.returncode != 0 or not result.is_file():
            tail = (proc.stderr or proc.stdout or "")[-1500:]
            for log in sorted((tmp / "msrun_log").glob("worker_*.log")):  # msrun keeps each rank's output apart
                tail += f"\n--- {log.name} ---\n" + log.read_text(errors="replace")[-1500:]
            if is_out_of_memory(RuntimeError(tail)):  # a rank ran out: the stage records it per batch size
                raise MemoryError(f"a {tool} rank ran out of memory: {tail[-600:]}")
            raise UserError(f"{tool} with {nproc} processes failed (exit {proc.returncode}): {tail}",
                            fix=f"run the command by hand to see every rank's log: {' '.join(cmd)}")
        out = json.loads(result.read_text())
    if not single:
        out["launch_command"] = " ".join(cmd[:-1] + ["PLAN.json"])
    return out
