"""ImageNet layouts, subsets, completeness and bad input (harness.data.datasets, data.batches)."""

from __future__ import annotations

import json
import shutil
import sqlite3

import numpy as np
import pytest

from harness import data
from harness.data import datasets as datasets
from harness.errors import UserError
from tests.conftest import color_classifier, color_images, run_pytest, toy_top1_baselines, write

RECIPE = data.get_recipe("imagenet_resize256_crop224", 32)


def _flat(tmp_path, n=6):
    """ILSVRC-style flat folder + val_label.txt from the colour classes."""
    src = color_images(tmp_path / "classes", per_class=2)
    flat = tmp_path / "val"
    flat.mkdir()
    lines, i = [], 1
    for label, cls in enumerate(sorted(p.name for p in src.iterdir())):
        for p in sorted((src / cls).iterdir()):
            name = f"ILSVRC2012_val_{i:08d}.png"
            shutil.copy(p, flat / name)
            lines.append(f"{name} {label}")
            i += 1
    labels = tmp_path / "val_label.txt"
    labels.write_text("\n".join(lines) + "\n")
    return flat, labels, lines


def test_class_folders_label_by_sorted_index(tmp_path):
    ds = datasets.image_folder(color_images(tmp_path / "d", per_class=2), num_classes=3)
    assert [s.label for s in ds.samples] == [0, 0, 1, 1, 2, 2]
    assert ds.samples[0].name == "0_red/img_0.png" and ds.listed == 6


def test_class_folder_too_many_is_named(tmp_path):
    root = color_images(tmp_path / "d", per_class=1)
    (root / ".ipynb_checkpoints").mkdir()
    with pytest.raises(UserError) as err:
        datasets.image_folder(root, num_classes=3)
    assert "1 class folder(s) too many" in str(err.value) and ".ipynb_checkpoints" in str(err.value)
    assert str(root) in str(err.value)


def test_empty_dataset_folder_says_what_to_do(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no class sub-folders"):
        datasets.image_folder(tmp_path / "empty")
    flat, _, _ = _flat(tmp_path)
    with pytest.raises(UserError, match="dataset.kind: flat"):
        datasets.image_folder(flat)


def test_flat_folder_with_label_file(tmp_path):
    flat, labels, lines = _flat(tmp_path)
    labels.write_text("\n".join(lines + [lines[0]]) + "\n")  # a duplicate row
    ds = datasets.flat_folder(flat, labels)
    assert [s.label for s in ds.samples] == [0, 0, 1, 1, 2, 2] and ds.duplicates == 1 and ds.listed == 6
    assert "1 duplicate entries counted once" in ds.summary(6)


def test_label_file_missing_rows_and_unknown_files(tmp_path):
    flat, labels, lines = _flat(tmp_path)
    labels.write_text("\n".join(lines[1:]))
    with pytest.raises(UserError) as err:
        datasets.flat_folder(flat, labels)
    assert "ILSVRC2012_val_00000001.png" in str(err.value) and "no row" in str(err.value)
    labels.write_text("\n".join(lines + ["ILSVRC2012_val_00000099.png 1"]))
    with pytest.raises(UserError) as err:
        datasets.flat_folder(flat, labels)
    assert "ILSVRC2012_val_00000099.png" in str(err.value) and "allow_missing" in str(err.value)
    ds = datasets.flat_folder(flat, labels, allow_missing=True)
    assert ds.summary(6).startswith("evaluated 6 of 7") and ds.missing == ["ILSVRC2012_val_00000099.png"]
    labels.write_text(lines[0] + "\nnot a row\n")
    with pytest.raises(UserError, match="line 2"):
        datasets.flat_folder(flat, labels)
    labels.write_text(f"{lines[0]}\n{lines[0].split()[0]} 2\n")
    with pytest.raises(UserError, match="listed twice"):
        datasets.flat_folder(flat, labels)


def test_subsets_are_seeded_and_recorded(tmp_path):
    root = color_images(tmp_path / "d", per_class=5)
    first = datasets.take_subset(datasets.image_folder(root), first=4)
    assert len(first.samples) == 4 and first.subset["first"] == 4
    a = datasets.take_subset(datasets.image_folder(root), per_class=2, seed=1)
    b = datasets.take_subset(datasets.image_folder(root), per_class=2, seed=1)
    c = datasets.take_subset(datasets.image_folder(root), per_class=2, seed=2)
    assert [s.name for s in a.samples] == [s.name for s in b.samples]
    assert a.subset["names_sha256"] == b.subset["names_sha256"] != c.subset["names_sha256"]
    assert [s.label for s in a.samples] == [0, 0, 1, 1, 2, 2]
    assert "per_class=2" in a.summary(6)


def test_corrupt_image_error_or_skip_and_named(tmp_path):
    root = color_images(tmp_path / "d", per_class=2)
    bad = root / "1_green" / "img_1.png"
    bad.write_bytes(bad.read_bytes()[:40])
    ds = datasets.image_folder(root)
    with pytest.raises(UserError) as err:
        list(data.batches(ds.samples, RECIPE, 2))
    assert str(bad) in str(err.value)
    skipped = []
    out = list(data.batches(ds.samples, RECIPE, 2, on_corrupt="skip", skipped=skipped, workers=2))
    assert sum(n for _, _, n in out) == 5 and [s[0] for s in skipped] == ["1_green/img_1.png"]
    ds.skipped = skipped
    assert "1 unreadable skipped (1_green/img_1.png)" in ds.summary(5)


def test_prefetching_batches_equal_serial(tmp_path):
    ds = datasets.image_folder(color_images(tmp_path / "d", per_class=3))
    serial = list(data.batches(ds.samples, RECIPE, 4))
    threaded = list(data.batches(ds.samples, RECIPE, 4, workers=3))
    assert len(serial) == len(threaded) == 3
    for (x1, y1, n1), (x2, y2, n2) in zip(serial, threaded):
        assert n1 == n2 and np.array_equal(x1, x2) and np.array_equal(y1, y2)


def test_process_pool_and_prefetch_thread_give_the_same_batches(tmp_path):
    root = color_images(tmp_path / "d", per_class=3)
    bad = root / "2_blue" / "img_0.png"
    bad.write_bytes(bad.read_bytes()[:40])
    ds = datasets.image_folder(root)
    serial_skipped, pooled_skipped = [], []
    serial = list(data.batches(ds.samples, RECIPE, 4, on_corrupt="skip", skipped=serial_skipped))
    pooled = list(data.batches(ds.samples, RECIPE, 4, on_corrupt="skip", skipped=pooled_skipped, workers=2,
                               processes=True, prefetch=True))
    assert len(serial) == len(pooled) == 2 and serial_skipped == pooled_skipped != []
    for (x1, y1, n1), (x2, y2, n2) in zip(serial, pooled):
        assert n1 == n2 and np.array_equal(x1, x2) and np.array_equal(y1, y2)
    # an unreadable image raised in a worker process still names the file, through the prefetch thread
    with pytest.raises(UserError) as err:
        list(data.batches(ds.samples, RECIPE, 4, workers=2, processes=True, prefetch=True))
    assert str(bad) in str(err.value)


def test_accuracy_stage_flat_layout_skip_policy_and_mlperf_rule(tmp_path):
    pytest.importorskip("onnxruntime")
    flat, labels, _ = _flat(tmp_path)
    (flat / "ILSVRC2012_val_00000003.png").write_bytes(b"not an image")
    color_classifier(tmp_path / "toy.onnx")
    toy_top1_baselines(tmp_path / "baselines.yaml", 100.0, 0.1)
    write(tmp_path / "suites" / "toy" / "suite.yaml", """\
        schema_version: 1
        model: se_resnext50
        source: {kind: onnx, path: ../../toy.onnx, num_classes: 3, weights: toy}
        input: {size: 32, preprocess: imagenet_resize256_crop224}
        export: [onnx]
        dataset: {kind: flat, path: ../../val, label_file: ../../val_label.txt, on_corrupt: skip,
                  expected_images: 6}
        accuracy_baselines: [toy.top1]
        accuracy_rule: both
        targets:
          - {device: cpu, runner: onnxruntime, format: onnx, batch_sizes: [4], stages: [accuracy]}
        """)
    store = tmp_path / "r.sqlite"
    p = run_pytest(["suites", "-m", "accuracy", "--harness-store", str(store),
                    "--harness-baselines", str(tmp_path / "baselines.yaml")], cwd=tmp_path)
    assert "1 passed" in p.stdout, p.stdout + p.stderr
    [rec] = [json.loads(r[0]) for r in sqlite3.connect(store).execute("SELECT record FROM results")]
    m = rec["metrics"]
    assert m["num_images"] == 5 and m["top1"] == 100.0
    assert m["dataset"]["skipped"][0]["file"] == "ILSVRC2012_val_00000003.png"
    assert m["dataset"]["layout"] == "flat" and m["dataset"]["listed"] == 6
    assert m["preprocessing_golden_sha256"] == RECIPE.golden_sha256
    assert "evaluated 5 of 6" in rec["reason"] and "expected 6" in rec["reason"]
    rules = [v.get("rule", "tolerance") for v in rec["baseline"]["all"]]
    assert rules == ["tolerance", "mlperf>=99%"]
    assert [v["verdict"] for v in rec["baseline"]["all"]] == ["pass", "pass"]
    assert all(v["source"]["document"] == "test-fixture" for v in rec["baseline"]["all"])
