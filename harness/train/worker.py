"""A training worker that a framework's launcher starts, one per process:
``torchrun ... python -m harness.train.worker PLAN.json`` or
``msrun ... python -m harness.train.worker PLAN.json``.

PyTorch: the process group (gloo on CPU, NCCL on GPU) from torchrun's
environment. MindSpore, data parallel as it documents it: ``init()`` (the
dynamic cluster msrun starts) and ``set_auto_parallel_context(parallel_mode=
DATA_PARALLEL, gradients_mean=True)``. Every rank trains on its own augmented
stream; rank 0 writes the result as JSON where the plan says.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if sys.path and sys.path[0] and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    # msrun runs this file as a script: its folder's modules (run, plan, common...) must not shadow others
    sys.path.pop(0)

from harness.fsio import write_text  # noqa: E402 (after the path fix above)
from harness.models import mindspore_net, torch_net  # noqa: E402
from harness.train import run as training  # noqa: E402


def _torch(plan: dict) -> int:
    torch, _ = torch_net._need_torch()
    backend = "nccl" if plan["device_target"] == "GPU" else "gloo"
    torch.distributed.init_process_group(backend)
    try:
        rank = torch.distributed.get_rank()
        out = training.run(plan, rank=rank)
        out["backend"] = backend
        if rank == 0:
            write_text(plan["result_path"], json.dumps(out))
    finally:
        torch.distributed.destroy_process_group()
    return 0


def _mindspore(plan: dict) -> int:
    import mindspore as ms
    from mindspore.communication import get_rank, init

    mindspore_net.set_context(plan["device_target"])
    init()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True)
    rank = get_rank()
    out = training.run(plan, rank=rank)
    if rank == 0:
        write_text(plan["result_path"], json.dumps(out))
    return 0


def _single(plan: dict) -> int:
    """One process, no launcher and no process group: the run of a 1-device
    target, kept out of the harness's own process (launchers.isolated)."""
    if plan["framework"] == "mindspore":
        mindspore_net.set_context(plan["device_target"])
    write_text(plan["result_path"], json.dumps(training.run(plan)))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    plan = json.loads(Path(argv[0]).read_text())
    if plan.get("single_process"):
        return _single(plan)
    return _torch(plan) if plan["framework"] == "torch" else _mindspore(plan)


if __name__ == "__main__":
    raise SystemExit(main())
