"""The preprocessing recipes the documents use.

A recipe is a named, declarative description of one source's evaluation
preprocessing (resize rule, crop, normalisation). Its `identity` goes into
every result, so figures produced with different preprocessing are never
compared with each other.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from harness.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp"}


@dataclass(frozen=True)
class Recipe:
    name: str
    # "shorter": scale so the shorter side is `resize` (aspect kept; the longer
    # side is truncated to an integer, as torchvision and MindSpore both do);
    # "square": resize to resize x resize (aspect not kept).
    resize_mode: Literal["shorter", "square"]
    resize: int
    crop: int
    interpolation: Literal["bilinear", "bicubic"]
    # applied to pixel values in 0..255
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str
    # Whose resize/crop arithmetic the recipe reproduces:
    # "torchvision": PIL resampling (antialiased when shrinking), centre-crop
    #   offset rounded (torchvision / timm / Cadene scripts);
    # "mindspore": mindspore.dataset.vision (OpenCV-style half-pixel bilinear,
    #   no antialiasing), centre-crop offset floored (the ModelZoo eval scripts).
    # Shrinking a photo by 2x, the two differ by up to ~75 grey levels.
    backend: Literal["torchvision", "mindspore"] = "torchvision"

    @property
    def params_hash(self) -> str:
        blob = json.dumps({k: v for k, v in asdict(self).items() if k != "source"}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def golden_sha256(self) -> str:
        """sha256 of this recipe's output on the fixed golden images.

        The parameters can stay the same while the pixels change (another
        Pillow, another resize rule in this file); the golden hash catches
        that, so results made with different preprocessing never compare.
        """
        return _golden_sha256(self)

    @property
    def identity(self) -> str:
        return f"{self.name}:{self.params_hash}:{self.golden_sha256[:12]}"

    def __call__(self, image) -> np.ndarray:
        """PIL image -> float32 CHW array."""
        image = image.convert("RGB")
        w, h = image.size
        if self.resize_mode == "square":
            size = (self.resize, self.resize)
        elif w <= h:
            size = (self.resize, max(1, int(h * self.resize / w)))
        else:
            size = (max(1, int(w * self.resize / h)), self.resize)
        if self.backend == "mindspore":
            if self.interpolation != "bilinear":
                raise NotImplementedError("the mindspore backend implements bilinear only")
            arr = _resize_bilinear_halfpixel(np.asarray(image), size[1], size[0])
            h, w = arr.shape[:2]
            top, left = (h - self.crop) // 2, (w - self.crop) // 2
        else:
            from PIL import Image

            resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[self.interpolation]
            arr = np.asarray(image.resize(size, resample))
            h, w = arr.shape[:2]
            top, left = int(round((h - self.crop) / 2.0)), int(round((w - self.crop) / 2.0))
        if top < 0 or left < 0:
            raise ValueError(f"recipe {self.name}: crop {self.crop} is larger than the resized image {w}x{h}")
        arr = arr[top:top + self.crop, left:left + self.crop].astype(np.float32)
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _resize_bilinear_halfpixel(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """uint8 HWC -> uint8 HWC, bilinear on half-pixel centres with edge clamping and no
    antialiasing: what OpenCV's INTER_LINEAR (and so mindspore.dataset.vision.Resize)
    computes, up to its fixed-point rounding (at most 1 grey level)."""
    in_h, in_w = img.shape[:2]

    def axis(n_out, n_in):
        pos = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(np.intp)
        return lo, np.minimum(lo + 1, n_in - 1), (pos - lo).astype(np.float32)

    y0, y1, wy = axis(out_h, in_h)
    x0, x1, wx = axis(out_w, in_w)
    f = img.astype(np.float32)
    rows = f[y0] * (1 - wy)[:, None, None] + f[y1] * wy[:, None, None]
    out = rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def golden_images() -> list[np.ndarray]:
    """Fixed generated images (two aspect ratios, odd sizes) whose preprocessed
    bytes identify a recipe's output."""
    rng = np.random.default_rng(20240601)
    out = []
    for h, w in ((375, 500), (333, 251)):
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        img = np.stack([127 + 100 * np.sin(xx / 17.0 + c) * np.cos(yy / 23.0 - c) for c in range(3)], axis=-1)
        img += rng.normal(0, 20, size=img.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


@functools.lru_cache(maxsize=None)
def _golden_sha256(recipe: "Recipe") -> str:
    from PIL import Image

    h = hashlib.sha256()
    for img in golden_images():
        h.update(np.ascontiguousarray(recipe(Image.fromarray(img)), dtype="<f4").tobytes())
    return h.hexdigest()


def _imagenet(scale=255.0):
    return tuple(m * scale for m in IMAGENET_MEAN), tuple(s * scale for s in IMAGENET_STD)


RECIPES: dict[str, Recipe] = {}


def _add(recipe: Recipe) -> None:
    RECIPES[recipe.name] = recipe


_add(Recipe("imagenet_resize256_crop224", "shorter", 256, 224, "bilinear", *_imagenet(),
            source="Ascend ACL / Cadene SE-ResNeXt50 preprocess (seed 004): Resize(256) bilinear, CenterCrop(224), "
                   "ImageNet mean/std"))
_add(Recipe("modelzoo_seresnext50", "square", 256, 224, "bilinear", *_imagenet(),
            source="MindSpore ModelZoo SE_ResNeXt50 eval: Resize((256,256)), CenterCrop(224), ImageNet mean/std x255",
            backend="mindspore"))
_add(Recipe("modelzoo_xception", "shorter", 320, 299, "bilinear", (127.5,) * 3, (127.5,) * 3,
            source="MindSpore ModelZoo Xception eval: Resize(320), CenterCrop(299), Normalize(127.5, 127.5)",
            backend="mindspore"))
_add(Recipe("modelzoo_efficientnet_b0", "shorter", 255, 224, "bilinear", (127.5,) * 3, (127.5,) * 3,
            source="MindSpore ModelZoo EfficientNet-B0 eval: Resize(255), CenterCrop(224), Normalize(127.5, 127.5)",
            backend="mindspore"))
_add(Recipe("whole_image_mean127", "square", 224, 224, "bilinear", (127.5,) * 3, (127.5,) * 3,
            source="small whole-image sets (scikit-learn's 8x8 digits): the whole image resized to the input, "
                   "no crop, Normalize(127.5, 127.5)"))
# timm's eval transform: Resize(floor(crop / crop_pct)), CenterCrop(crop), the
# model's mean/std and interpolation (its pretrained_cfg).
_add(Recipe("timm_legacy_seresnext50_32x4d", "shorter", 256, 224, "bilinear", *_imagenet(),
            source="timm legacy_seresnext50_32x4d pretrained_cfg: crop_pct 0.875, bilinear, ImageNet mean/std"))
_add(Recipe("timm_legacy_xception", "shorter", 333, 299, "bicubic", (127.5,) * 3, (127.5,) * 3,
            source="timm legacy_xception pretrained_cfg: crop_pct 0.8975, bicubic, mean/std 0.5"))
_add(Recipe("timm_efficientnet_b0", "shorter", 256, 224, "bicubic", *_imagenet(),
            source="timm efficientnet_b0 pretrained_cfg: crop_pct 0.875, bicubic, ImageNet mean/std"))


def get_recipe(name: str, size: int | None = None) -> Recipe:
    """A named recipe; `size` rescales resize/crop for a smaller test input."""
    if name not in RECIPES:

        near = difflib.get_close_matches(name, RECIPES, n=3)
        raise UserError(f"unknown preprocessing recipe {name!r}" + (f"; did you mean {near}?" if near else ""),
                        fix=f"use one of: {', '.join(sorted(RECIPES))}")
    r = RECIPES[name]
    if size is not None and size != r.crop:
        resize = max(size, round(r.resize * size / r.crop))
        r = Recipe(f"{r.name}@{size}", r.resize_mode, resize, size, r.interpolation, r.mean, r.std, r.source,
                   r.backend)
    return r
