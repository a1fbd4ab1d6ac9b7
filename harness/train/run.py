"""One training run, whichever the framework: the learns check on a fixed
batch, then the timed run on the augmented stream with the recipe's schedule,
then (when asked) the trained checkpoint.

``run(plan)`` takes a plain dict (what the train stage resolved from the suite)
so that it also runs in a ``torchrun``/``msrun`` worker; it returns plain data
(curves, times, memory), which the stage turns into metrics.
"""

from __future__ import annotations

import time
from pathlib import Path

from harness.errors import UserError
from harness.train.common import Curves, NonFiniteLoss, PeakRSS, drive, lr_schedule
from harness.train.inputs import AUGMENTS, TrainStream, learnable_images, load_images
from harness.train.mindspore_trainer import MindSporeTrainer
from harness.train.torch_trainer import TorchTrainer


def make_trainer(plan: dict, model=None):
    if plan["framework"] == "mindspore":
        if model is not None:
            raise UserError("internal: the MindSpore path builds its own network")

        return MindSporeTrainer(plan)

    return TorchTrainer(plan, model=model)


def stream_for(plan: dict, rank: int = 0) -> TrainStream:
    data = plan["data"]
    if data.get("files"):
        imgs, labels = load_images(data["files"], 2 * plan["image_size"])
    else:
        imgs, labels = learnable_images(data["images"] or 32, data["classes"], 2 * plan["image_size"], seed=plan["seed"])
    return TrainStream(imgs, labels, plan["image_size"], plan["mean"], plan["std"], AUGMENTS[plan["augment"]],
                       seed=plan["seed"], rank=rank)


def run(plan: dict, *, rank: int = 0, model=None, clock=time.perf_counter) -> dict:
    """Train as ``plan`` says; see the module doc. A non-finite loss ends the
    run early: the result then carries ``nonfinite: {phase, step, loss}``."""
    out: dict = {"framework": plan["framework"]}
    stream = stream_for(plan, rank)
    bs = plan["batch_size"]
    learns_cfg = plan["learns"]
    with PeakRSS() as mem:
        t0 = clock()
        trainer = make_trainer(plan, model)
        out["build_s"] = clock() - t0
        out["api"] = trainer.api
        fixed = stream.fixed_batch(bs)
        # 1. learns: the fixed batch at a constant LR; its first step compiles the graph
        try:
            t0 = clock()
            first = drive(trainer.step, [fixed], [learns_cfg["lr"]], clock=clock)
            out["time_to_first_step_s"] = clock() - t0
            rest = drive(trainer.step, [fixed] * (learns_cfg["steps"] - 1), [learns_cfg["lr"]] * (learns_cfg["steps"] - 1),
                         clock=clock, start_step=1)
            out["learns_losses"] = first.losses + rest.losses
            # 2. the timed run: the recipe's schedule on augmented batches
            lrs = lr_schedule(plan["recipe"], plan["steps"], plan["lr_scale"])
            batches = (stream.next_batch(bs) for _ in range(len(lrs)))
            timed = drive(trainer.step, batches, lrs, clock=clock, budget_s=plan.get("budget_s"))
        except NonFiniteLoss as exc:
            out["nonfinite"] = {"phase": "learns" if "learns_losses" not in out else "train", "step": exc.step,
                                "loss": str(exc.loss)}
            timed = Curves()
        out.update(losses=timed.losses, lrs=timed.lrs, step_s=timed.step_s)
        out["device_memory_mb"] = trainer.device_memory_mb()
        if plan.get("checkpoint") and rank == 0 and "nonfinite" not in out:
            out["checkpoint"] = str(trainer.save(Path(plan["checkpoint"])))
    out["peak_host_mb"] = mem.mb
    return out

