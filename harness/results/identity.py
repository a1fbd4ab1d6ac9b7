"""What a result measured, which version it measured, and on which machine: kept apart.

- The **benchmark key**: what is measured. Model, stage, case (target and
  batch), device family, batch size, precision, timing scope, input size;
  for accuracy also the dataset and the preprocessing.
- The **version under test**: artifact sha256, runner and framework versions,
  CANN / driver / firmware, harness version, the suite file's hash, the
  zoo's git commit.
- The **machine**: CPU model and cores, NPU chips, GPU models.

The history gate follows one key on one machine class across versions: a
changed artifact or runtime is what a nightly exists to judge, so it is
reported as the suspect, never a reason to compare nothing.
"""

from __future__ import annotations

import hashlib
import json

from harness.results.record import Result

KEY_FIELDS = ("model", "stage", "case", "device", "batch_size", "precision", "timing_scope", "input_size",
              "scenario")
# frameworks whose version is part of the version under test when installed
VERSION_FRAMEWORKS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-cann", "mindspore", "mindcv", "torch",
                      "timm", "onnx", "numpy", "ais_bench")


def _dataset_id(r: Result) -> str | None:
    ds = r.metrics.get("dataset")
    if not isinstance(ds, dict):
        return None
    subset = ds.get("subset") or {}
    return f"{ds.get('layout')}:{ds.get('listed')}:{subset.get('names_sha256') or 'all'}"


def benchmark_key(r: Result) -> dict:
    key = {f: getattr(r, f, None) for f in KEY_FIELDS}
    if r.stage == "throughput":  # stored before scenarios: the harness's own loop
        key["scenario"] = r.scenario or "harness"
    if r.stage == "accuracy":
        key.update(preprocessing=r.preprocessing, dataset=_dataset_id(r))
    return key


def key_string(key: dict) -> str:
    return json.dumps(key, sort_keys=True, default=str)


def same_key(candidate: dict, earlier: dict) -> bool:
    """Keys equal; a field an older result did not record (None, e.g. input_size
    before it was stored) is taken to be the candidate's. A result stored before
    scenarios ran the harness's own loop: its None scenario is "harness"."""
    def eq(k, v):
        if k == "input_size":
            return earlier.get(k) in (None, v)
        if k == "scenario":
            return (earlier.get(k) or "harness") == (v or "harness")
        return earlier.get(k) == v
    return all(eq(k, v) for k, v in candidate.items())


def version_of(r: Result, env: dict | None) -> dict:
    """The version under test: what may have changed between two runs of one key."""
    env = env or {}
    fw = env.get("frameworks") or {}
    dev = env.get("device_env") or {}
    npu = dev.get("npu") or {}
    out = {
        "artifact_sha256": r.artifact_sha256,
        "runner": r.runner,
        "runner_version": r.runner_version,
        "harness": env.get("harness"),
        "suite_sha256": r.suite_sha256,
        "git_commit": (env.get("git") or {}).get("commit"),
        "cann": dev.get("cann_version"),
        "npu_driver": npu.get("driver_version"),
        "npu_firmware": npu.get("firmware_version"),
    }
    out.update({name: fw[name] for name in VERSION_FRAMEWORKS if name in fw})
    return {k: v for k, v in out.items() if v is not None}


def machine_of(env: dict | None) -> dict:
    """The machine class: results are compared only within one."""
    env = env or {}
    dev = env.get("device_env") or {}
    npu = dev.get("npu") or {}
    return {
        "cpu_model": env.get("cpu_model"),
        "cpu_cores": env.get("cpu_cores"),
        "npu_chips": sorted(set(npu.get("chips") or [])),
        "gpus": sorted({g.get("name") for g in dev.get("gpus") or [] if g.get("name")}),
    }


def machine_class(env: dict | None) -> str:
    m = machine_of(env)
    return hashlib.sha256(json.dumps(m, sort_keys=True).encode()).hexdigest()[:12]


