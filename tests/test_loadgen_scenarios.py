"""The throughput stage under MLPerf LoadGen: --scenario offline|singlestream|server on CPU, `scenario:` in a suite."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from harness.results.identity import benchmark_key, same_key
from harness.results.record import Result
from test_terminal_output import REPO, _env, conv_classifier

pytest.importorskip("mlperf_loadgen")


def _project(tmp_path, scenario_line: str = "") -> None:
    conv_classifier(tmp_path / "toy.onnx")
    (tmp_path / "suites" / "toy").mkdir(parents=True)
    (tmp_path / "suites" / "toy" / "suite.yaml").write_text(textwrap.dedent(f"""\
        schema_version: 1
        model: toy
        source: {{kind: onnx, path: ../../toy.onnx, num_classes: 3}}
        input: {{size: 32, preprocess: imagenet_resize256_crop224}}
        export: [onnx]
        timing: {{warmup: 1, min_iterations: 20, min_duration_s: 0.3}}
        targets:
          - {{name: cpu-ort, device: cpu, runner: onnxruntime, format: onnx, batch_sizes: [2],
              stages: [throughput], server_latency_ms: 50{scenario_line}}}
        """))


def _throughput_records(store):
    db = sqlite3.connect(store)
    return [r for r in (json.loads(x[0]) for x in db.execute("SELECT record FROM results"))
            if r["stage"] == "throughput"]


@pytest.mark.parametrize("scenario", ["offline", "singlestream", "server"])
def test_scenario_from_the_command_line(tmp_path, scenario):
    _project(tmp_path)
    store = tmp_path / "r.sqlite"
    p = subprocess.run([sys.executable, "-m", "harness", "run", "suites", "--store", str(store),
                        "--scenario", scenario], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    [rec] = _throughput_records(store)
    m, lg = rec["metrics"], rec["metrics"]["loadgen"]
    assert rec["scenario"] == scenario == m["scenario"]
    # LoadGen's own summary fields are kept
    assert lg["effective_scenario"] == {"offline": "Offline", "singlestream": "SingleStream",
                                        "server": "Server"}[scenario]
    assert lg["result_validity"] == "VALID" and m["loadgen_valid"] is True
    assert "early_stopping_result" in lg and isinstance(lg["result_90.00_percentile_latency_ns"], int)
    assert m["latency_ms_p90"] == pytest.approx(lg["result_90.00_percentile_latency_ns"] / 1e6)
    assert m["throughput_ips"] > 0 and m["gflop_s"] > 0
    if scenario == "server":
        # LoadGen's summary gives the effective target QPS to 6 significant digits
        # (seen: 14869.7 for 14869.733..., 15719 for 15718.978...)
        assert m["server_tried"][-1]["valid"] and m["server_qps"] == pytest.approx(m["server_tried"][-1]["target_qps"],
                                                                                   rel=1e-5)
    if scenario == "offline":
        assert m["throughput_ips"] == lg["result_samples_per_second"]
    assert f"cpu-ort [{scenario}]" in p.stdout  # the table names the scenario


def test_scenario_in_the_suite_and_the_benchmark_key(tmp_path):
    _project(tmp_path, ", scenario: singlestream")
    store = tmp_path / "r.sqlite"
    p = subprocess.run([sys.executable, "-m", "harness", "run", "suites", "--store", str(store)], cwd=tmp_path,
                       env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    [rec] = _throughput_records(store)
    assert rec["scenario"] == "singlestream" and "LoadGen singlestream: p90" in rec["reason"]

    def res(scenario):
        return Result(model="m", case="throughput[x-bs1]", stage="throughput", status="passed", device="cpu",
                      batch_size=1, scenario=scenario)
    old = res(None)  # stored before scenarios: the harness's own loop
    assert benchmark_key(old)["scenario"] == "harness"
    assert same_key(benchmark_key(res("harness")), benchmark_key(old))
    assert not same_key(benchmark_key(res("offline")), benchmark_key(old))
    assert not same_key(benchmark_key(res("offline")), benchmark_key(res("server")))


def test_unknown_scenario_is_refused(tmp_path):
    _project(tmp_path, ", scenario: multistream")
    p = subprocess.run([sys.executable, "-m", "harness", "validate", "suites"], cwd=tmp_path, env=_env(tmp_path),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 3 and "scenario" in p.stderr and "Traceback" not in p.stderr, p.stderr
