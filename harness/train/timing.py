"""Step-time statistics of a training run: warm-up steps dropped, then the
steady state detected, then mean and percentiles over it.

Steady state: the first step from which a window of ``window`` consecutive
steps stays within ``tolerance`` of the window's median (graph compilation,
allocator growth and caches settling make the first steps slower). When no
window qualifies, every step after the warm-up is used and the result says so.
"""

from __future__ import annotations

import numpy as np


def steady_start(step_s: list[float], warmup: int, window: int = 3, tolerance: float = 0.25) -> int | None:
    t = np.asarray(step_s, dtype=np.float64)
    for i in range(warmup, len(t) - window + 1):
        w = t[i:i + window]
        med = float(np.median(w))
        if med > 0 and np.all(np.abs(w - med) <= tolerance * med):
            return i
    return None


def summarize(step_s: list[float], *, warmup: int, images_per_step: int, window: int = 3,
              tolerance: float = 0.25) -> dict:
    """Metrics of the steady part of ``step_s`` (seconds per step)."""
    if len(step_s) <= warmup:
        return {"steady_state": False, "steps_timed": 0,
                "steady_note": f"{len(step_s)} steps run, {warmup} of them warm-up: nothing left to time"}
    start = steady_start(step_s, warmup, window, tolerance)
    steady = start is not None
    used = np.asarray(step_s[start if steady else warmup:], dtype=np.float64) * 1000.0
    mean = float(used.mean())
    out = {
        "train_step_ms": mean,
        "train_step_ms_p50": float(np.percentile(used, 50)),
        "train_step_ms_p90": float(np.percentile(used, 90)),
        "train_step_ms_p99": float(np.percentile(used, 99)),
        "train_images_per_s": images_per_step / (mean / 1000.0),
        "steps_timed": int(len(used)),
        "steady_state": steady,
        "steady_from_step": int((start if steady else warmup) + 1),
    }
    if not steady:
        out["steady_note"] = (f"no {window} consecutive steps within {tolerance:.0%} of their median after "
                              f"{warmup} warm-up steps; all {len(used)} later steps used")
    return out
