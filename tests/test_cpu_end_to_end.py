"""The real CPU path end to end, small: MindSpore network -> ONNX and MINDIR
exports -> parity on ONNX Runtime and MindSpore -> throughput, through the
pytest plugin exactly as `pytest suites -m cpu` runs it."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.conftest import run_pytest, write

pytest.importorskip("mindspore")
pytest.importorskip("mindcv")
pytest.importorskip("onnxruntime")

SUITE = """\
    schema_version: 1
    model: efficientnet_b0
    source: {kind: mindcv, arch: efficientnet_b0, num_classes: 10}
    input: {size: 64, preprocess: modelzoo_efficientnet_b0}
    export: [onnx, mindir]
    timing: {warmup: 1, min_iterations: 3, min_duration_s: 0}
    targets:
      - {name: ort, device: cpu, runner: onnxruntime, format: onnx, batch_sizes: [1, 2], stages: [parity, throughput]}
      - {name: ms, device: cpu, runner: mindspore, format: native, batch_sizes: [1], stages: [throughput]}
      - {name: mindir, device: cpu, runner: mindspore, format: mindir, batch_sizes: [1], stages: [parity]}
      - {name: npu, device: ascend310p, runner: ais_bench, format: om, batch_sizes: [1], stages: [throughput]}
    """


def test_cpu_path_for_real(tmp_path):
    write(tmp_path / "suites" / "effnet" / "suite.yaml", SUITE)
    store = tmp_path / "r.sqlite"
    args = ["suites", "-m", "cpu", "--harness-store", str(store), "--harness-cache", str(tmp_path / "cache"),
            "--harness-report", str(tmp_path / "report.html")]
    p = run_pytest(args, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    assert "7 passed, 1 deselected" in p.stdout
    db = sqlite3.connect(store)
    recs = {json.loads(r[0])["case"]: json.loads(r[0]) for r in db.execute("SELECT record FROM results")}
    exp = recs["export[onnx]"]["metrics"]
    assert exp["batch_sizes"] == [1, 2] and not any(a["cached"] for a in exp["artifacts"].values())
    for case in ("parity[ort-bs1]", "parity[mindir-bs1]"):
        m = recs[case]["metrics"]
        assert m["passed"] and m["cosine"] > 0.9999 and m["top1_agree"] == 1.0, m
    thr = recs["throughput[ort-bs2]"]
    assert thr["runner"] == "onnxruntime" and thr["runner_version"]
    assert thr["artifact_sha256"] == exp["artifacts"]["2"]["sha256"]
    assert thr["metrics"]["throughput_ips"] > 0 and thr["metrics"]["iterations"] >= 3
    assert recs["throughput[ms-bs1]"]["runner"] == "mindspore"
    assert (tmp_path / "report.html").read_text().count("<svg") >= 1

    # A second run takes the exports from the cache (same sha256, no export time).
    p = run_pytest(args, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:]
    last = [json.loads(r[0]) for r in db.execute("SELECT record FROM results WHERE case_name='export[onnx]'")][-1]
    assert all(a["cached"] for a in last["metrics"]["artifacts"].values())
    assert last["metrics"]["artifacts"]["2"]["sha256"] == exp["artifacts"]["2"]["sha256"]


def test_broken_export_fails_parity(tmp_path, monkeypatch):
    """A parity check that cannot fail is no check: corrupt the cached ONNX
    file's weights and the parity case must fail, naming the tolerance."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    write(tmp_path / "suites" / "effnet" / "suite.yaml", SUITE)
    args = ["suites", "-m", "cpu and parity", "--harness-store", str(tmp_path / "r.sqlite"),
            "--harness-cache", str(tmp_path / "cache"), "-k", "ort"]
    p = run_pytest(args, cwd=tmp_path)
    assert "1 passed" in p.stdout, p.stdout[-3000:]
    [onnx_file] = [f for f in (tmp_path / "cache").rglob("model.onnx")]
    model = onnx.load(str(onnx_file))
    init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    arr = numpy_helper.to_array(init).copy()
    arr *= 1.05  # a 5% error in the biggest weight tensor
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(onnx_file))
    # The cache re-exports a file whose bytes no longer match its record ...
    p = run_pytest(args, cwd=tmp_path)
    assert "1 passed" in p.stdout, p.stdout[-3000:]
    # ... so to stand for a broken exporter, corrupt the file and its record alike.
    from harness.models.cache import sha256_file

    onnx.save(model, str(onnx_file))
    meta_file = onnx_file.parent / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["sha256"] = sha256_file(onnx_file)
    meta_file.write_text(json.dumps(meta))
    p = run_pytest(args, cwd=tmp_path)
    assert "1 failed" in p.stdout, p.stdout[-3000:]
    assert "x the logit std (allowed 0.001)" in p.stdout


ANY_MINDCV = """\
    schema_version: 1
    model: resnet18
    source: {kind: mindcv, arch: resnet18, num_classes: 10}
    input: {size: 64, preprocess: imagenet_resize256_crop224}
    export: [onnx]
    timing: {warmup: 1, min_iterations: 3, min_duration_s: 0}
    targets:
      - {name: ort, device: cpu, runner: onnxruntime, format: onnx, batch_sizes: [1, 2], stages: [parity, throughput]}
    """


def test_any_mindcv_architecture_runs_without_a_card(tmp_path):
    """A model with no card and no code: export, parity and throughput from its mindcv name alone."""
    from harness.models.cards import CARDS

    assert "resnet18" not in CARDS
    write(tmp_path / "suites" / "resnet18" / "suite.yaml", ANY_MINDCV)
    store = tmp_path / "r.sqlite"
    p = run_pytest(["suites", "-m", "cpu", "--harness-store", str(store), "--harness-cache", str(tmp_path / "c")],
                   cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    assert "4 passed" in p.stdout
    db = sqlite3.connect(store)
    recs = {json.loads(r[0])["case"]: json.loads(r[0]) for r in db.execute("SELECT record FROM results")}
    assert recs["parity[ort-bs1]"]["metrics"]["cosine"] > 0.9999
    assert recs["throughput[ort-bs2]"]["metrics"]["throughput_ips"] > 0


def test_unknown_mindcv_architecture_names_near_matches(tmp_path):
    write(tmp_path / "suites" / "r" / "suite.yaml", ANY_MINDCV.replace("arch: resnet18", "arch: resnet181"))
    p = run_pytest(["suites", "--collect-only"], cwd=tmp_path)
    assert p.returncode != 0
    assert "unknown source.arch 'resnet181'" in p.stdout and "resnet18" in p.stdout
