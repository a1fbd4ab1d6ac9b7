"""The environment a result was measured in, recorded beside every result."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import harness
from harness.runners import devices as _devices
from harness.runners.devices import cpu_model

FRAMEWORKS = ("numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxruntime-cann", "mindspore", "mindcv",
              "torch", "timm", "ais_bench")


def _git(root: Path) -> dict:
    def q(*args):
        p = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        return p.stdout.strip() if p.returncode == 0 else None

    try:
        commit = q("rev-parse", "HEAD")
        dirty = bool(q("status", "--porcelain", "--untracked-files=no")) if commit else None
    except (OSError, subprocess.TimeoutExpired):
        commit, dirty = None, None
    return {"commit": commit, "dirty": dirty}


@functools.lru_cache(maxsize=1)
def capture(root: str | None = None) -> dict:
    versions = {}
    for dist in FRAMEWORKS:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    devices = _devices.detect()
    return {
        "harness": harness.__version__,
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "frameworks": versions,
        "devices": {k: v for k, v in devices.present.items() if v},
        "device_details": devices.details,
        # npu-smi chips/driver/firmware, CANN, nvidia-smi GPUs, ORT providers, MindSpore backends
        "device_env": devices.as_env(),
        "git": _git(Path(root) if root else Path.cwd()),
    }
