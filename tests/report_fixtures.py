"""Hand-made stores for the report, gate, README and interop tests.

The figures are made up by a seeded generator (a test fixture, never shown
as a measurement outside the test's temporary folder); they only need the
shape of real results: identities, per-iteration latencies, summaries.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.results import Result
from harness.results.store import Store
from harness.metrics.timing import summarize

MODELS = ("se_resnext50", "xception", "efficientnet_b0")
DEVICES = (("cpu", "onnxruntime", "host", 12.0), ("gpu", "onnxruntime", "host", 900.0),
           ("ascend910", "mindspore", "host", 1500.0), ("ascend310", "ais_bench", "device", 1000.0),
           ("ascend310p", "ais_bench", "device", 1600.0))
BATCHES = (1, 4, 8, 16, 32, 64)


def env(host: str = "bench-01") -> dict:
    return {"harness": "0.1.0", "hostname": host, "cpu_model": "Test CPU", "cpu_cores": 2, "os": "Linux",
            "python": "3.11", "frameworks": {"onnxruntime": "1.20.1"}, "devices": {"cpu": True},
            "git": {"commit": "0123456789abcdef", "dirty": False}}


def throughput_result(run_id, model, device, runner, scope, bs, latencies_s, *, status="passed",
                      sha="ab" * 32, runner_version="1.0", reps: int = 3, contended=None) -> Result:
    """A result whose `reps` repetitions are consecutive slices of `latencies_s`."""
    chunks = [list(c) for c in np.array_split(np.asarray(latencies_s, dtype=float), reps)]
    t = summarize(chunks, batch_size=bs, timing_scope=scope, warmup_iterations=2, contended=contended)
    return Result(model=model, case=f"throughput[{device}-{runner}-fp32-bs{bs}]", stage="throughput",
                  status=status, device=device, target=f"{device}-{runner}-fp32", runner=runner,
                  runner_version=runner_version, batch_size=bs, precision="fp32", timing_scope=scope,
                  artifact_sha256=sha, artifact_format="onnx", preprocessing="imagenet-224", run_id=run_id,
                  input_size=224, metrics=t.as_metrics(), reason=f"{t.throughput_ips:.2f} img/s")


def accuracy_result(run_id, model, top1, top5, n=1000, status="passed") -> Result:
    return Result(model=model, case="accuracy[cpu-onnxruntime-fp32-bs8]", stage="accuracy", status=status,
                  device="cpu", target="cpu-onnxruntime-fp32", runner="onnxruntime", runner_version="1.0",
                  batch_size=8, precision="fp32", timing_scope="host", artifact_sha256="ab" * 32,
                  artifact_format="onnx", preprocessing="imagenet-224", run_id=run_id,
                  metrics={"top1": top1, "top5": top5, "num_images": n})


def latencies(rng, ips: float, bs: int, n: int, noise: float = 0.02) -> np.ndarray:
    mean = bs / ips
    return mean * (1 + noise * np.abs(rng.standard_normal(n)))


def make_history_store(path: Path, *, models=MODELS, devices=DEVICES, batches=BATCHES, runs=30,
                       iterations=20, seed=0, interrupted=(), slow_last=None) -> Path:
    """`runs` runs, each measuring every model x device x batch; runs whose
    index is in `interrupted` end 'interrupted'. `slow_last`: factor applied
    to the last run's throughput (a regression to find)."""
    rng = np.random.default_rng(seed)
    store = Store(path)
    for i in range(runs):
        run_id = store.begin_run(env(), ["harness", "run", "suites"])
        factor = slow_last if (slow_last and i == runs - 1) else 1.0
        for model in models:
            for device, runner, scope, base in devices:
                for bs in batches:
                    ips = base * (bs ** 0.3) / factor
                    store.add(throughput_result(run_id, model, device, runner, scope, bs,
                                                latencies(rng, ips, bs, iterations)))
            store.add(accuracy_result(run_id, model, 79.0, 94.4))
            store.add(Result(model=model, case="parity[cpu-onnxruntime-fp32-bs1]", stage="parity",
                             status="passed", device="cpu", batch_size=1, artifact_format="onnx",
                             runner="onnxruntime", run_id=run_id,
                             metrics={"max_abs_diff": 1e-6, "max_abs_diff_rel": 1e-7, "cosine": 1.0,
                                      "top1_agree": 1.0}, reason="onnx matches"))
        store.finish_run(run_id, "interrupted" if i in interrupted else "finished")
    store.close()
    return path


SMALL_DEVICES = (("cpu", "onnxruntime", "host", 12.0), ("ascend310", "ais_bench", "device", 1000.0))
