"""Preprocessed-input cache and the ais_bench .bin layout."""

from __future__ import annotations

import numpy as np

from harness import data, datasets
from harness.prep_cache import PrepCache, write_bins
from tests.conftest import color_images


def test_cache_round_trip_is_memory_mapped_and_keyed_by_recipe(tmp_path):
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
    assert isinstance(arr, np.memmap)
    other = PrepCache(tmp_path / "c", data.get_recipe("timm_efficientnet_b0", 32))
    assert other.dir != cache.dir


def test_ais_bench_bins(tmp_path):
    ds = datasets.image_folder(color_images(tmp_path / "d", per_class=1))
    recipe = data.get_recipe("imagenet_resize256_crop224")
    bins = write_bins(ds.samples, recipe, tmp_path / "prep_bin")
    assert [p.name for p in bins] == ["0_red__img_0.bin", "1_green__img_0.bin", "2_blue__img_0.bin"]
    assert all(p.stat().st_size == 602112 for p in bins)  # 3 x 224 x 224 float32, no header
    np.testing.assert_array_equal(np.fromfile(bins[-1], "<f4").reshape(3, 224, 224), recipe(ds.samples[-1].open()))
