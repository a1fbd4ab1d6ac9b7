"""Preprocessing recipes held against the reference libraries' own transforms on real photos.

- timm recipes and the Ascend/Cadene recipe vs timm's eval transform (PIL +
  torchvision): max abs difference <= 1e-5 after normalisation (float32
  rounding of a different order of operations; the pixels are identical).
- ModelZoo recipes vs mindspore.dataset.vision (Resize, CenterCrop,
  Normalize) on the same decoded pixels: at most 1 grey level before
  normalisation (OpenCV's fixed-point bilinear rounds differently), i.e.
  <= 1.01 / std after it.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from harness import data

skdata = pytest.importorskip("skimage.data")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field")


def _photos():
    return [np.asarray(Image.fromarray(getattr(skdata, n)()).convert("RGB")) for n in PHOTOS]


@pytest.mark.parametrize("recipe, timm_model", [
    ("timm_legacy_seresnext50_32x4d", "legacy_seresnext50_32x4d"),
    ("imagenet_resize256_crop224", "legacy_seresnext50_32x4d"),
    ("timm_legacy_xception", "legacy_xception"),
    ("timm_efficientnet_b0", "efficientnet_b0"),
])
def test_timm_recipes_match_timm_transforms(recipe, timm_model):
    timm = pytest.importorskip("timm")
    cfg = timm.data.resolve_data_config({}, model=timm.create_model(timm_model, pretrained=False, num_classes=2))
    ref = timm.data.create_transform(**cfg)
    r = data.RECIPES[recipe]
    assert r.crop == cfg["input_size"][-1] and r.interpolation == cfg["interpolation"]
    for img in _photos():
        want = ref(Image.fromarray(img)).numpy()
        got = r(Image.fromarray(img))
        assert got.shape == want.shape and got.dtype == np.float32
        assert np.abs(got - want).max() <= 1e-5


@pytest.mark.parametrize("recipe", ["modelzoo_seresnext50", "modelzoo_xception", "modelzoo_efficientnet_b0"])
def test_modelzoo_recipes_match_mindspore_dataset_ops(recipe):
    pytest.importorskip("mindspore")
    import mindspore.dataset.vision as V

    r = data.RECIPES[recipe]
    size = (r.resize, r.resize) if r.resize_mode == "square" else r.resize
    ops = [V.Resize(size, V.Inter.LINEAR), V.CenterCrop(r.crop), V.Normalize(list(r.mean), list(r.std)), V.HWC2CHW()]
    for img in _photos() + [np.asarray(Image.fromarray(_photos()[1]).resize((603, 401)))]:  # odd crop offsets
        want = img
        for op in ops:
            want = op(want)
        got = r(Image.fromarray(img))
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1.01 / min(r.std)
        # and far from the PIL (antialiased) resize the torchvision recipes use
    pil = data.Recipe("x", r.resize_mode, r.resize, r.crop, "bilinear", r.mean, r.std, "", backend="torchvision")
    assert np.abs(pil(Image.fromarray(_photos()[0])) - r(Image.fromarray(_photos()[0]))).max() > 10 / max(r.std)


def test_golden_hash_identifies_the_pixels():
    ids = {r.golden_sha256 for r in data.RECIPES.values()}
    # the Cadene recipe and timm's legacy_seresnext50 recipe produce the same pixels
    assert len(ids) == len(data.RECIPES) - 1
    assert data.RECIPES["imagenet_resize256_crop224"].golden_sha256 == \
        data.RECIPES["timm_legacy_seresnext50_32x4d"].golden_sha256
    r = data.get_recipe("imagenet_resize256_crop224", 32)
    assert r.identity.startswith("imagenet_resize256_crop224@32:") and r.identity.endswith(r.golden_sha256[:12])
    other = data.Recipe(r.name, r.resize_mode, r.resize, r.crop, "bicubic", r.mean, r.std, r.source)
    assert other.golden_sha256 != r.golden_sha256 and other.identity != r.identity
