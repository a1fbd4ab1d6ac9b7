"""The interface every runner implements."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class Runner:
    """Load an artifact on a device, run batches, synchronise, close.

    `timing_scope` says what a timing taken around `run` + `synchronize`
    covers: "host" (wall clock on the host, host<->device copies included)
    or "device" (the device's own compute time, as ais_bench reports).
    """

    name: str = "base"
    formats: tuple[str, ...] = ()  # artifact formats it loads (harness.vocab.FORMATS)
    devices: tuple[str, ...] = ()  # device families it runs on (harness.vocab.DEVICES)
    timing_scope: str = "host"

    def __init__(self, device: str, device_id: int = 0, precision: str = "fp32", options: dict | None = None):
        self.device = device
        self.device_id = device_id
        self.precision = precision
        self.options = dict(options or {})

    def load(self, artifact: Path | object, input_shape: tuple[int, ...]) -> None:
        raise NotImplementedError

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch; return the logits (N, classes) as a host numpy array."""
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait for queued device work. Runners whose `run` blocks do nothing."""

    def device_times_ms(self) -> list[float] | None:
        """Per-run device compute times, for runners whose scope is "device"."""
        return None

    @classmethod
    def unavailable(cls, options: dict | None = None, device: str | None = None) -> str | None:
        """Why this runner cannot run on this host (say, its tool is not
        installed), naming what is missing and the exact install that brings it
        (``pip install onnxruntime-gpu``); None if it can. ``device``: the
        target's device family. The case then skips with this reason: a missing
        runtime piece is never an error."""
        return None

    def extra_metrics(self) -> dict:
        """What the runner learned while loading and running (how its artifact
        was built, tool versions, its own statistics), for the result's metrics."""
        return {}

    def repair_hint(self, artifact) -> str:
        """The fix for an artifact that will not load: the harness's own cached
        export is deleted and made again; a user's file is theirs to replace."""
        cache = self.options.get("artifact_cache")
        try:
            ours = cache is not None and Path(artifact).resolve().is_relative_to(Path(cache).resolve())
        except (TypeError, ValueError, OSError):
            ours = False
        if ours:
            return f"delete the cached artifact ({artifact}) so the next run exports it again"
        return "this is the suite's own file (source.path): copy it again in full or export it again"

    def version(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
