"""The accuracy stage on a model whose correct answers are known."""

from __future__ import annotations

import sqlite3
import json

import numpy as np
import pytest

from harness.errors import UserError
from harness.metrics import TopK
from tests.conftest import color_classifier, color_images, run_pytest, toy_top1_baselines, write

pytest.importorskip("onnxruntime")

def _suite(tmp_path, onnx_name, weights="toy"):
    return write(tmp_path / "suites" / "toy" / "suite.yaml", f"""\
        schema_version: 1
        model: se_resnext50
        source: {{kind: onnx, path: ../../{onnx_name}, num_classes: 3, weights: {weights}}}
        input: {{size: 32, preprocess: imagenet_resize256_crop224}}
        export: [onnx]
        dataset: {{kind: imagefolder, path: ../../data, num_images: 12}}
        accuracy_baselines: [toy.top1]
        targets:
          - {{device: cpu, runner: onnxruntime, format: onnx, batch_sizes: [5], stages: [accuracy]}}
        """)


def _records(store):
    db = sqlite3.connect(store)
    return [json.loads(r[0]) for r in db.execute("SELECT record FROM results")]


@pytest.mark.parametrize("permute, expect_top1, outcome", [(False, 100.0, "1 passed"), (True, 0.0, "1 failed")])
def test_accuracy_stage_known_answers(tmp_path, permute, expect_top1, outcome):
    color_images(tmp_path / "data", per_class=4)
    color_classifier(tmp_path / "toy.onnx", permute=permute)
    toy_top1_baselines(tmp_path / "baselines.yaml", 99.0, 0.5)
    _suite(tmp_path, "toy.onnx")
    store = tmp_path / "r.sqlite"
    p = run_pytest(["suites", "-m", "accuracy", "--harness-store", str(store),
                    "--harness-baselines", str(tmp_path / "baselines.yaml")], cwd=tmp_path)
    assert outcome in p.stdout, p.stdout + p.stderr
    [rec] = _records(store)
    # 12 images in batches of 5: the last batch is padded, and padding must not count
    assert rec["metrics"]["num_images"] == 12
    assert rec["metrics"]["top1"] == expect_top1
    assert rec["baseline"]["id"] == "toy.top1"
    assert rec["baseline"]["source"]["document"] == "test-fixture"
    if permute:
        assert rec["status"] == "failed"
        assert "misses >= 98.5" in p.stdout  # the reason a user sees
    else:
        assert rec["status"] == "passed"
        assert rec["baseline"]["verdict"] == "pass"


@pytest.mark.parametrize("suite_weights, baseline_kw, field", [
    ("other", {}, "weights other vs toy"),
    ("toy", {"preprocessing": "modelzoo_seresnext50"}, "preprocessing imagenet_resize256_crop224@32 vs "
                                                       "modelzoo_seresnext50"),
    ("null", {}, "weights unknown vs toy"),
])
def test_accuracy_is_held_only_against_baselines_of_its_weights_and_preprocessing(tmp_path, suite_weights,
                                                                                  baseline_kw, field):
    color_images(tmp_path / "data", per_class=4)
    color_classifier(tmp_path / "toy.onnx", permute=True)  # top-1 0%: would fail if it were compared
    toy_top1_baselines(tmp_path / "baselines.yaml", 99.0, 0.5, **baseline_kw)
    _suite(tmp_path, "toy.onnx", weights=suite_weights)
    store = tmp_path / "r.sqlite"
    p = run_pytest(["suites", "-m", "accuracy", "--harness-store", str(store),
                    "--harness-baselines", str(tmp_path / "baselines.yaml")], cwd=tmp_path)
    assert "1 passed" in p.stdout, p.stdout + p.stderr
    [rec] = _records(store)
    assert rec["baseline"]["verdict"] == "not_comparable"
    assert field in rec["baseline"]["reason"]


def test_accuracy_skips_without_trained_weights(tmp_path):
    write(tmp_path / "suites" / "m" / "suite.yaml", """\
        model: efficientnet_b0
        source: {kind: mindcv, arch: efficientnet_b0}
        export: [onnx]
        targets:
          - {device: cpu, runner: onnxruntime, format: onnx, stages: [accuracy]}
        """)
    p = run_pytest(["suites", "-m", "accuracy", "--harness-store", str(tmp_path / "r.sqlite")], cwd=tmp_path)
    assert "1 skipped" in p.stdout, p.stdout + p.stderr
    assert "no trained weights" in p.stdout and "source.checkpoint" in p.stdout


def test_topk_streaming_matches_whole_array():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(103, 20)).astype(np.float32)
    labels = rng.integers(0, 20, size=103)
    t = TopK((1, 5))
    for s in range(0, 103, 16):
        t.update(logits[s:s + 16], labels[s:s + 16])
    order = np.argsort(-logits, axis=1)
    assert t.result()["top1"] == pytest.approx(100 * np.mean(order[:, 0] == labels))
    assert t.result()["top5"] == pytest.approx(100 * np.mean((order[:, :5] == labels[:, None]).any(1)))


def test_topk_rejects_nan_logits_and_bad_labels():
    t = TopK()
    with pytest.raises(UserError, match="NaN"):
        t.update(np.array([[np.nan, 1.0]] * 2), np.array([0, 1]), where="model.onnx")
    with pytest.raises(UserError, match="out of range"):
        t.update(np.ones((2, 3)), np.array([0, 7]))
