"""The pytest plugin, run in a subprocess exactly as a user runs it."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from harness.errors import ExitCode
from tests.conftest import color_classifier, run_pytest, write

SUITE = """\
    schema_version: 1
    model: se_resnext50
    source: {kind: onnx, path: ../../toy.onnx, num_classes: 3}
    input: {size: 32, preprocess: imagenet_resize256_crop224}
    export: [onnx]
    timing: {warmup: 1, min_iterations: 3, min_duration_s: 0}
    targets:
      - {name: host, device: cpu, runner: "null", format: onnx, batch_sizes: [1, 4], stages: [throughput]}
      - {name: npu, device: ascend310p, runner: ais_bench, format: om, batch_sizes: [1, 4, 8], stages: [throughput]}
      - {name: cuda, device: gpu, runner: onnxruntime, format: onnx, batch_sizes: [1], stages: [parity, throughput]}
    """


@pytest.fixture
def project(tmp_path):
    color_classifier(tmp_path / "toy.onnx")
    write(tmp_path / "suites" / "toy" / "suite.yaml", SUITE)
    return tmp_path


def _records(store):
    db = sqlite3.connect(store)
    return [json.loads(r[0]) for r in db.execute("SELECT record FROM results ORDER BY id")]


def test_one_item_per_stage_target_batch(project):
    p = run_pytest(["suites", "--collect-only", "-q"], cwd=project)
    items = [line for line in p.stdout.splitlines() if "::" in line]
    assert items == [
        "suites/toy/suite.yaml::export[onnx]",
        "suites/toy/suite.yaml::throughput[host-bs1]",
        "suites/toy/suite.yaml::throughput[host-bs4]",
        "suites/toy/suite.yaml::throughput[npu-bs1]",
        "suites/toy/suite.yaml::throughput[npu-bs4]",
        "suites/toy/suite.yaml::throughput[npu-bs8]",
        "suites/toy/suite.yaml::parity[cuda-bs1]",
        "suites/toy/suite.yaml::throughput[cuda-bs1]",
    ]


@pytest.mark.skipif(shutil.which("npu-smi") is not None, reason="this host has npu-smi")
def test_absent_device_is_collected_and_skipped_with_reason(project):
    store = project / "r.sqlite"
    p = run_pytest(["suites", "-m", "ascend310p", "--harness-store", str(store)], cwd=project)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "3 skipped, 5 deselected" in p.stdout
    assert "SKIPPED [3] suites/toy/suite.yaml:1: no Ascend 310P: npu-smi not found" in p.stdout
    recs = _records(store)
    assert [r["status"] for r in recs] == ["skipped"] * 3
    assert all(r["reason"] == "no Ascend 310P: npu-smi not found" for r in recs)


def test_cpu_cases_run_and_are_stored_with_identity(project):
    store = project / "r.sqlite"
    p = run_pytest(["suites", "-m", "cpu", "--harness-store", str(store)], cwd=project)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "3 passed" in p.stdout
    recs = _records(store)
    thr = [r for r in recs if r["stage"] == "throughput"]
    assert [r["batch_size"] for r in thr] == [1, 4]
    for r in thr:
        assert r["runner"] == "null" and r["timing_scope"] == "host"
        assert len(r["artifact_sha256"]) == 64
        assert r["preprocessing"].startswith("imagenet_resize256_crop224@32:")
        assert r["metrics"]["iterations"] >= 3 and r["metrics"]["throughput_ips"] > 0
    db = sqlite3.connect(store)
    status, env = db.execute("SELECT status, env FROM runs").fetchone()
    env = json.loads(env)
    assert status == "finished"
    assert env["cpu_cores"] >= 1 and env["python"] and "numpy" in env["frameworks"]


@pytest.mark.parametrize("edit, expected", [
    ("    batch_sizes: [1, 4]", "unknown key"),
    ("model: se_resnext50\n", "model"),
    ("runner: \"null\"", "unknown runner"),
    ("kind: onnx", "onnx"),
])
def test_bad_suite_is_one_clear_error(project, edit, expected):
    suite = project / "suites" / "toy" / "suite.yaml"
    text = suite.read_text()
    if edit.startswith("    batch"):
        text = text.replace("export: [onnx]", "export: [onnx]\nbatch_size: 3")
        expected = "batch_size: unknown key"
    elif edit.startswith("model"):
        text = text.replace(edit, "")
        expected = "model: Field required"
    elif edit.startswith("runner"):
        text = text.replace("runner: \"null\"", "runner: nul")
        expected = "unknown runner 'nul'. Did you mean null?"
    else:
        text = text.replace("kind: onnx", "kind: [onnx")
        expected = "not valid YAML"
    suite.write_text(text)
    p = run_pytest(["suites", "-q"], cwd=project)
    assert p.returncode != 0
    assert str(suite) in p.stdout or "suites/toy/suite.yaml" in p.stdout
    assert expected in p.stdout, p.stdout
    assert "Traceback" not in p.stdout and "site-packages" not in p.stdout


def test_broken_baselines_file_stops_the_run_before_measuring(project):
    bad = write(project / "baselines.yaml", "schema_version: 1\nbaselines:\n  - id: x\n    model: nope\n")
    store = project / "r.sqlite"
    p = run_pytest(["suites", "-m", "cpu", "--harness-store", str(store)], cwd=project)
    assert p.returncode == ExitCode.INPUT  # bad input, as `harness run` says it
    assert str(bad) in p.stderr and "missing required key 'metric'" in p.stderr
    assert "Traceback" not in p.stderr
    assert not store.exists()  # nothing was run, so no half-made run either
