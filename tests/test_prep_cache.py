"""Preprocessed-input cache and the ais_bench .bin layout."""

from __future__ import annotations

import numpy as np
import pytest

from harness import data
from harness.data import datasets as datasets
from harness.data.prep_cache import PrepCache, write_bins
from harness.data.samples import NpyFile
from harness.errors import UserError
from tests.conftest import color_images


def test_cache_round_trip_reads_into_the_batch_and_is_keyed_by_recipe(tmp_path):
    ds = datasets.image_folder(color_images(tmp_path / "d", per_class=2))
    recipe = data.get_recipe("imagenet_resize256_crop224", 32)
    cache = PrepCache(tmp_path / "c", recipe)
    first = cache.build(ds.samples, progress=False)
    assert first["built"] == 6 and first["images_per_s"] > 0
    assert cache.build(ds.samples, progress=False)["cached"] == 6
    fresh = list(data.batches(ds.samples, recipe, 4))
    cached = list(data.batches(ds.samples, recipe, 4, source=cache.stream(ds.samples)))
    for (a, ya, na), (b, yb, nb) in zip(fresh, cached):
        assert na == nb and np.array_equal(a, b) and np.array_equal(ya, yb)
    s, arr = next(cache.stream(ds.samples))
    assert isinstance(arr, NpyFile) and np.array_equal(np.asarray(arr), fresh[0][0][0])
    # a cache file cut short is an error naming it, not a batch with a stale tail
    raw = arr.path.read_bytes()
    arr.path.write_bytes(raw[:-100])
    with pytest.raises(UserError, match="truncated") as exc:
        list(data.batches(ds.samples, recipe, 4, source=cache.stream(ds.samples)))
    assert str(arr.path) in str(exc.value)
    other = PrepCache(tmp_path / "c", data.get_recipe("timm_efficientnet_b0", 32))
    assert other.dir != cache.dir


def test_ais_bench_bins(tmp_path):
    ds = datasets.image_folder(color_images(tmp_path / "d", per_class=1))
    recipe = data.get_recipe("imagenet_resize256_crop224")
    bins = write_bins(ds.samples, recipe, tmp_path / "prep_bin")
    assert [p.name for p in bins] == ["0_red__img_0.bin", "1_green__img_0.bin", "2_blue__img_0.bin"]
    assert all(p.stat().st_size == 602112 for p in bins)  # 3 x 224 x 224 float32, no header
    np.testing.assert_array_equal(np.fromfile(bins[-1], "<f4").reshape(3, 224, 224), recipe(ds.samples[-1].open()))


def test_accuracy_stage_uses_the_prep_cache(tmp_path):
    """dataset.prep_cache: the first run fills the cache, the second reads it,
    and both give the same answers (the known-answer colour classifier)."""
    import json
    import sqlite3

    from tests.conftest import color_classifier, run_pytest, write

    color_images(tmp_path / "data", per_class=3)
    color_classifier(tmp_path / "toy.onnx")
    write(tmp_path / "suites" / "toy" / "suite.yaml", """\
        model: se_resnext50
        source: {kind: onnx, path: ../../toy.onnx, num_classes: 3}
        input: {size: 32, preprocess: imagenet_resize256_crop224}
        export: [onnx]
        dataset: {kind: imagefolder, path: ../../data, prep_cache: true}
        targets:
          - {device: cpu, runner: onnxruntime, format: onnx, batch_sizes: [4], stages: [accuracy]}
        """)
    store = tmp_path / "r.sqlite"
    args = ["suites", "-m", "accuracy", "--harness-store", str(store), "--harness-cache", str(tmp_path / "cache")]
    for _ in range(2):
        p = run_pytest(args, cwd=tmp_path)
        assert "1 passed" in p.stdout, p.stdout[-3000:]
    recs = [json.loads(r[0]) for r in sqlite3.connect(store).execute("SELECT record FROM results ORDER BY id")]
    first, second = (r["metrics"] for r in recs)
    assert first["prep_cache"]["built"] == 9 and first["prep_cache"]["cached"] == 0
    assert second["prep_cache"]["built"] == 0 and second["prep_cache"]["cached"] == 9
    assert first["top1"] == second["top1"] == 100.0
    assert len(list((tmp_path / "cache" / "prep").rglob("*.npy"))) == 9


def test_batches_refuse_an_image_of_another_shape(tmp_path):
    ds = datasets.image_folder(color_images(tmp_path / "d", per_class=1))
    recipe = data.get_recipe("imagenet_resize256_crop224", 32)
    shapes = [(3, 32, 32), (1, 32, 32), (3, 32, 32)]  # (1, 32, 32) would broadcast into a row silently
    source = [(s, np.ones(shape, np.float32)) for s, shape in zip(ds.samples, shapes)]
    with pytest.raises(UserError, match=r"shape \(1, 32, 32\)") as exc:
        list(data.batches(ds.samples, recipe, 3, source=source))
    assert ds.samples[1].name in str(exc.value)
    x, y, n = next(data.batches(ds.samples, recipe, 4, source=source[:1]))
    assert n == 1 and x.shape == (4, 3, 32, 32) and x[0].min() == 1 and not x[1:].any()  # zero padding


def test_cache_stream_passes_an_unreadable_image_on_as_its_error(tmp_path):
    root = color_images(tmp_path / "d", per_class=2)
    bad = next(root.rglob("*.*"))
    bad.write_bytes(b"not an image")
    ds = datasets.image_folder(root)
    recipe = data.get_recipe("imagenet_resize256_crop224", 32)
    cache = PrepCache(tmp_path / "c", recipe)
    items = list(cache.stream(ds.samples))
    errors = [(s, a) for s, a in items if isinstance(a, Exception)]
    assert len(items) == len(ds.samples) and len(errors) == 1 and isinstance(errors[0][1], UserError)
    assert errors[0][0].path == bad and not cache.path(errors[0][0]).exists()  # no gap written into the cache
    skipped = []
    got = list(data.batches(ds.samples, recipe, 4, source=cache.stream(ds.samples), on_corrupt="skip",
                            skipped=skipped))
    assert sum(n for _, _, n in got) == len(ds.samples) - 1 and len(skipped) == 1
    with pytest.raises(UserError):
        list(data.batches(ds.samples, recipe, 4, source=cache.stream(ds.samples)))
