"""Results as pytest-benchmark JSON (so `pytest-benchmark compare` reads them) and as a pandas DataFrame."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from report_fixtures import make_history_store

from harness.cli import main
from harness.results.interchange import to_dataframe
from harness.results.history import load_history

SMALL = dict(models=("xception",), devices=(("cpu", "onnxruntime", "host", 12.0),), batches=(1, 4))


def test_pytest_benchmark_compare_reads_the_export(tmp_path, capsys):
    pytest.importorskip("pytest_benchmark")
    path = make_history_store(tmp_path / "h.sqlite", runs=2, **SMALL)
    ids = [r["run_id"] for r in sorted(load_history([path]).runs.values(), key=lambda r: r["_seq"])]
    for i, rid in enumerate(ids):
        assert main(["export", "--store", str(path), "--run", rid, "--out", str(tmp_path / f"000{i + 1}_run.json")]) == 0
    doc = json.loads((tmp_path / "0001_run.json").read_text())
    bench = doc["benchmarks"][0]
    assert bench["extra_info"]["unit"] == "images/s" and bench["stats"]["rounds"] == 20
    assert {"min", "max", "mean", "stddev", "median", "iqr", "ops", "q1", "q3"} <= set(bench["stats"])
    proc = subprocess.run([sys.executable, "-m", "pytest_benchmark", "compare", "--group-by", "name",
                           str(tmp_path / "0001_run.json"), str(tmp_path / "0002_run.json")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "xception::throughput[cpu-onnxruntime-fp32-bs4]" in proc.stdout


def test_dataframe_view(tmp_path):
    path = make_history_store(tmp_path / "h.sqlite", runs=2, interrupted=(1,), **SMALL)
    df = to_dataframe(load_history([path]))
    assert len(df) == 2 * (2 + 2)  # per run: 2 throughput, 1 accuracy, 1 parity
    assert {"run_id", "run_status", "model", "device", "batch_size", "throughput_ips", "latency_ms_p50", "top1",
            "identity_key"} <= set(df.columns)
    assert "latencies_ms" not in df.columns  # lists stay out of the flat view
    tp = df[df.stage == "throughput"]
    assert tp.groupby("batch_size")["throughput_ips"].count().to_dict() == {1: 2, 4: 2}
    assert set(df.run_status) == {"finished", "interrupted"}
    assert main(["export", "--format", "csv", "--store", str(path), "--out", str(tmp_path / "r.csv")]) == 0
