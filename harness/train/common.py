"""What both training paths share, with no framework imported: the learning-rate
schedules, the training loop's bookkeeping (losses, applied LRs, step times,
non-finite loss), the learns check, peak host memory and the trained-checkpoint
cache.

A framework path (:mod:`harness.train.mindspore_trainer`,
:mod:`harness.train.torch_trainer`) builds the network, optimizer and loss-scaled
step, and hands :func:`drive` a ``step(x, y, lr) -> (loss, applied_lr)``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.errors import UserError

OPTIMIZERS = ("momentum", "rmsprop", "sgd")


def check_optimizer(recipe: dict) -> None:
    """Both frameworks' first check of a recipe (the suite schema holds the same list)."""
    if recipe["optimizer"] not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {recipe['optimizer']!r}",
                        fix=f"train.recipe.optimizer: one of {', '.join(OPTIMIZERS)}")
SCHEDULES = ("warmup_cosine", "warmup_linear", "constant")
FRAMEWORKS = ("mindspore", "torch")
#: MindSpore's amp levels (mindspore.amp.build_train_network)
AMP_LEVELS = ("O0", "O1", "O2", "O3", "auto")


def lr_schedule(recipe: dict, steps: int, scale: float = 1.0) -> np.ndarray:
    """Per-step learning rates: the document's schedule (its epochs and warm-up
    epochs) compressed onto ``steps`` steps, every value times ``scale``.

    warmup_cosine: linear warm-up from lr_init to lr_max, then cosine annealing
    to lr_end (SE-ResNeXt50's linear_warmup + warmup_cosine_annealing);
    warmup_linear: linear warm-up, then linear decay to lr_end (Xception's and
    EfficientNet-B0's lr_decay_mode "linear"/"liner"); constant: lr_max.
    """
    kind = recipe["lr_schedule"]
    if kind not in SCHEDULES:
        raise UserError(f"unknown lr_schedule {kind!r}", fix=f"train.recipe.lr_schedule: one of {', '.join(SCHEDULES)}")
    if steps <= 0:
        return np.zeros(0, np.float32)
    lo, hi, end = recipe["lr_init"], recipe["lr_max"], recipe["lr_end"]
    if kind == "constant":
        return np.full(steps, hi * scale, np.float32)
    frac = recipe["warmup_epochs"] / recipe["epochs"] if recipe["epochs"] else 0.0
    warm = min(steps, int(math.ceil(frac * steps)))
    out = np.empty(steps, np.float64)
    for i in range(steps):
        if i < warm:
            out[i] = lo + (hi - lo) * (i + 1) / warm
        else:
            t = (i - warm) / max(1, steps - warm)
            if kind == "warmup_cosine":
                out[i] = end + (hi - end) * 0.5 * (1 + math.cos(math.pi * t))
            else:
                out[i] = hi + (end - hi) * t
    return (out * scale).astype(np.float32)


def lr_scale_for(recipe: dict, batch_size: int, num_devices: int, declared: float | str) -> float:
    """The target's LR multiplier: declared, or (``auto``) the linear scaling
    rule, global batch here / the document's global batch."""
    if declared != "auto":
        return float(declared)
    return (batch_size * num_devices) / (recipe["batch_size"] * recipe["num_devices"])


class NonFiniteLoss(Exception):
    def __init__(self, step: int, loss: float):
        super().__init__(f"loss is {loss} at step {step}")
        self.step, self.loss = step, loss


@dataclass
class Curves:
    """What one phase of training recorded, step by step."""

    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    step_s: list[float] = field(default_factory=list)


def drive(step, batches, lrs, *, clock=time.perf_counter, budget_s: float | None = None,
          start_step: int = 0) -> Curves:
    """Run ``step(x, y, lr)`` for each (batch, lr); stop at a non-finite loss
    (raising :class:`NonFiniteLoss` with the 1-based step) or after ``budget_s``."""
    out = Curves()
    t_start = clock()
    for i, ((x, y), lr) in enumerate(zip(batches, lrs)):
        t0 = clock()
        loss, applied = step(x, y, float(lr))
        dt = clock() - t0
        out.losses.append(float(loss))
        out.lrs.append(float(applied))
        out.step_s.append(dt)
        if not math.isfinite(float(loss)):
            raise NonFiniteLoss(start_step + i + 1, float(loss))
        if budget_s is not None and clock() - t_start >= budget_s:
            break
    return out


def learns(losses: list[float], min_drop: float) -> tuple[bool, float, str]:
    """The overfit check: did the loss on the fixed batch fall by ``min_drop``
    (a fraction of the first step's loss) by the last step? Returns
    (passed, drop, reason)."""
    if len(losses) < 2:
        return False, 0.0, f"learns check needs at least 2 steps, got {len(losses)}"
    first, last = losses[0], min(losses[-2:])
    drop = (first - last) / abs(first) if first else 0.0
    ok = math.isfinite(drop) and drop >= min_drop
    verb = "fell" if drop > 0 else "did not fall"
    return ok, drop, (f"loss on the fixed batch {verb} from {first:.4f} to {last:.4f} in {len(losses)} steps "
                      f"({drop:+.1%}; needed at least {min_drop:.0%})")


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every
    20 ms from /proc, plus the start and end), in MB. Child processes are not
    counted; the torchrun path reports its workers' own peaks."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    @staticmethod
    def rss() -> int:
        try:
            import psutil

            return psutil.Process().memory_info().rss
        except ImportError:  # pragma: no cover - psutil is a dependency of the harness
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _watch(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.rss())

    def __enter__(self):
        self.peak = self.rss()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def mb(self) -> float:
        return self.peak / 1e6


def identity(parts: dict) -> str:
    """sha256 of a training identity (network source, recipe, data, target)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def checkpoint_path(cache_root: str | Path, ident: str, suffix: str) -> Path:
    return Path(cache_root) / "trained" / ident[:24] / f"model{suffix}"


def is_out_of_memory(exc: BaseException) -> bool:
    """An allocation failure of the host or a device (torch, MindSpore, numpy)."""
    if isinstance(exc, MemoryError):
        return True
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(s in text for s in ("out of memory", "outofmemory", "memory is not enough", "malloc device memory",
                                   "cannot allocate memory", "alloc memory failed"))


def threads_per_process(num_processes: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, num_processes))
