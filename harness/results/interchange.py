"""Results in other tools' shapes: pytest-benchmark JSON and a pandas DataFrame.

``to_pytest_benchmark(history, run_id)`` builds the JSON document that
``pytest-benchmark compare`` reads: one benchmark per throughput result that
stored its per-iteration latencies, its statistics computed by
pytest-benchmark's own ``Stats`` class from those samples (seconds per batch),
so every figure in the file is one the harness measured. Results without
samples (stored before they were kept, or from a device that reports only a
summary) are left out and named in the returned ``skipped`` list.

``to_dataframe(history)`` is one row per stored result: identity, run status
and time, and every scalar metric as its own column.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.errors import UserError
from harness.fsio import write_text

PYTEST_BENCHMARK_GROUP = "{model} {device} ({timing_scope} scope)"


def to_pytest_benchmark(history, run_id: str) -> tuple[dict, list[str]]:
    try:
        from pytest_benchmark import __version__ as pb_version
        from pytest_benchmark.stats import Stats
    except ImportError:
        raise UserError("exporting to pytest-benchmark JSON needs pytest-benchmark",
                        fix="pip install pytest-benchmark (or: pip install -e '.[dev]')") from None
    run = history.runs[run_id]
    env = run.get("env") or {}
    benchmarks, skipped = [], []
    for r in history.run_results([run_id]):
        if r.stage != "throughput":
            continue
        lat = r.metrics.get("latencies_ms")
        if r.status not in ("passed", "failed") or not lat:
            skipped.append(f"{r.model} {r.case}: " + (r.status if r.status not in ("passed", "failed")
                                                      else "no per-iteration latencies stored"))
            continue
        st = Stats()
        for ms in lat:
            st.update(ms / 1e3)
        stats = st.as_dict()
        stats["data"] = [ms / 1e3 for ms in lat]
        stats["iterations"] = 1
        benchmarks.append({
            "group": PYTEST_BENCHMARK_GROUP.format(model=r.model, device=r.device, timing_scope=r.timing_scope),
            "name": f"{r.model}::{r.case}", "fullname": f"{r.model}::{r.case}",
            "params": {"batch_size": r.batch_size}, "param": f"bs{r.batch_size}",
            "extra_info": {"throughput_ips": r.metrics.get("throughput_ips"), "unit": "images/s",
                           "batch_size": r.batch_size, "device": r.device, "runner": r.runner,
                           "runner_version": r.runner_version, "precision": r.precision,
                           "timing_scope": r.timing_scope, "artifact_sha256": r.artifact_sha256,
                           "identity_key": r.identity_key, "status": r.status},
            "options": {"timer": "device" if r.timing_scope == "device" else "perf_counter",
                        "warmup": r.metrics.get("warmup_iterations"), "min_rounds": None,
                        "max_time": None, "min_time": None, "disable_gc": False},
            "stats": stats,
        })
    git = env.get("git") or {}
    doc = {
        "machine_info": {"node": env.get("hostname"), "processor": env.get("cpu_model"),
                         "machine": env.get("machine"), "python_version": env.get("python"),
                         "system": env.get("os"), "cpu": {"brand_raw": env.get("cpu_model"),
                                                          "count": env.get("cpu_cores")},
                         "harness_run": run_id, "frameworks": env.get("frameworks") or {}},
        "commit_info": {"id": git.get("commit"), "dirty": bool(git.get("dirty")), "project": "modelzoo-harness",
                        "branch": git.get("branch")},
        "benchmarks": benchmarks,
        "datetime": run.get("started_at"),
        "version": pb_version,
    }
    return doc, skipped


def write_pytest_benchmark(history, run_id: str, out: str | Path) -> tuple[Path, int, list[str]]:
    doc, skipped = to_pytest_benchmark(history, run_id)
    out = Path(out)
    if out.is_dir():
        raise UserError("output path is a directory", path=out, fix="name a .json file")
    write_text(out, json.dumps(doc, indent=2))
    return out, len(doc["benchmarks"]), skipped


def to_dataframe(history):
    """A pandas DataFrame of every stored result (one row each)."""
    import pandas as pd

    rows = []
    for r in history.results:
        run = history.runs.get(r.run_id) or {}
        row = {"run_id": r.run_id, "run_status": run.get("status"), "run_started_at": run.get("started_at"),
               "host": (run.get("env") or {}).get("hostname"), "model": r.model, "case": r.case, "stage": r.stage,
               "status": r.status, "device": r.device, "target": r.target, "runner": r.runner,
               "runner_version": r.runner_version, "batch_size": r.batch_size, "precision": r.precision,
               "timing_scope": r.timing_scope, "artifact_format": r.artifact_format,
               "artifact_sha256": r.artifact_sha256, "preprocessing": r.preprocessing,
               "identity_key": r.identity_key, "created_at": r.created_at, "reason": r.reason}
        for k, v in r.metrics.items():
            if isinstance(v, (int, float, bool, str)) and k != "traceback" and k not in row:
                row[k] = v
        rows.append(row)
    df = pd.DataFrame(rows)
    for col in ("run_started_at", "created_at"):
        if col in df:
            df[col] = pd.to_datetime(df[col], utc=True, errors="coerce")
    if "batch_size" in df:
        df["batch_size"] = df["batch_size"].astype("Int64")
    return df
