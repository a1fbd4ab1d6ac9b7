"""Images, labels and the preprocessing recipes the documents use.

A recipe is a named, declarative description of one source's evaluation
preprocessing (resize rule, crop, normalisation). Its `identity` goes into
every result, so figures produced with different preprocessing are never
compared with each other.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Literal

import numpy as np

from harness.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp"}


@dataclass(frozen=True)
class Recipe:
    name: str
    # "shorter": scale so the shorter side is `resize` (aspect kept);
    # "square": resize to resize x resize (aspect not kept).
    resize_mode: Literal["shorter", "square"]
    resize: int
    crop: int
    interpolation: Literal["bilinear", "bicubic"]
    # applied to pixel values in 0..255
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str

    @property
    def identity(self) -> str:
        blob = json.dumps({k: v for k, v in asdict(self).items() if k != "source"}, sort_keys=True)
        return f"{self.name}:{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

    def __call__(self, image) -> np.ndarray:
        """PIL image -> float32 CHW array."""
        from PIL import Image

        resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[self.interpolation]
        image = image.convert("RGB")
        w, h = image.size
        if self.resize_mode == "square":
            size = (self.resize, self.resize)
        elif w <= h:
            size = (self.resize, max(1, round(h * self.resize / w)))
        else:
            size = (max(1, round(w * self.resize / h)), self.resize)
        image = image.resize(size, resample)
        w, h = image.size
        left, top = int(round((w - self.crop) / 2.0)), int(round((h - self.crop) / 2.0))
        image = image.crop((left, top, left + self.crop, top + self.crop))
        arr = np.asarray(image, dtype=np.float32)
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _imagenet(scale=255.0):
    return tuple(m * scale for m in IMAGENET_MEAN), tuple(s * scale for s in IMAGENET_STD)


RECIPES: dict[str, Recipe] = {}


def _add(recipe: Recipe) -> None:
    RECIPES[recipe.name] = recipe


_add(Recipe("imagenet_resize256_crop224", "shorter", 256, 224, "bilinear", *_imagenet(),
            source="Ascend ACL / Cadene SE-ResNeXt50 preprocess (seed 004)"))
_add(Recipe("modelzoo_seresnext50", "square", 256, 224, "bilinear", *_imagenet(),
            source="MindSpore ModelZoo SE_ResNeXt50 eval: Resize((256,256)), CenterCrop(224)"))
_add(Recipe("modelzoo_xception", "shorter", 320, 299, "bilinear", (127.5,) * 3, (127.5,) * 3,
            source="MindSpore ModelZoo Xception eval: Resize(320), CenterCrop(299), Normalize(127.5, 127.5)"))
_add(Recipe("modelzoo_efficientnet_b0", "shorter", 255, 224, "bilinear", (127.5,) * 3, (127.5,) * 3,
            source="MindSpore ModelZoo EfficientNet-B0 eval: Resize(255), CenterCrop(224), Normalize(127.5, 127.5)"))


def get_recipe(name: str, size: int | None = None) -> Recipe:
    """A named recipe; `size` rescales resize/crop for a smaller test input."""
    if name not in RECIPES:
        import difflib

        near = difflib.get_close_matches(name, RECIPES, n=3)
        raise UserError(f"unknown preprocessing recipe {name!r}" + (f"; did you mean {near}?" if near else ""),
                        fix=f"use one of: {', '.join(sorted(RECIPES))}")
    r = RECIPES[name]
    if size is not None and size != r.crop:
        resize = max(size, round(r.resize * size / r.crop))
        r = Recipe(f"{r.name}@{size}", r.resize_mode, resize, size, r.interpolation, r.mean, r.std, r.source)
    return r


@dataclass
class Sample:
    name: str
    label: int
    path: Path | None = None
    pixels: np.ndarray | None = None  # HWC uint8, for generated images

    def open(self):
        from PIL import Image, UnidentifiedImageError

        if self.pixels is not None:
            return Image.fromarray(self.pixels)
        try:
            with Image.open(self.path) as im:
                im.load()
                return im.convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise UserError(f"cannot read image: {exc}", path=self.path,
                            fix="replace or remove the file, then run again") from None


def synthetic_dataset(num_images: int, num_classes: int, seed: int = 0, min_side: int = 160,
                      max_side: int = 400) -> list[Sample]:
    """Deterministic generated photos-of-nothing: smooth colour fields plus noise,
    varied sizes and aspect ratios so resize/crop paths are exercised."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(num_images):
        h, w = rng.integers(min_side, max_side, size=2)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = rng.uniform(0, 255, size=3)
        grad = rng.uniform(-0.5, 0.5, size=(3, 2))
        img = base[:, None, None] + grad[:, 0, None, None] * yy + grad[:, 1, None, None] * xx
        img = img.transpose(1, 2, 0) + rng.normal(0, 12, size=(h, w, 3))
        out.append(Sample(f"synthetic_{i:06d}", int(rng.integers(num_classes)),
                          pixels=np.clip(img, 0, 255).astype(np.uint8)))
    return out


def image_folder(root: str | Path, limit: int | None = None) -> list[Sample]:
    """Class-folder layout: the label is the folder's index in sorted order."""
    root = Path(root)
    if not root.is_dir():
        raise UserError("dataset folder not found", path=root, fix="set dataset.path in the suite to an existing folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise UserError("dataset folder has no class sub-folders", path=root,
                        fix="use the layout root/<class>/<image>.JPEG")
    samples = []
    for label, cls in enumerate(classes):
        for p in sorted((root / cls).iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                samples.append(Sample(f"{cls}/{p.name}", label, path=p))
    if not samples:
        raise UserError("dataset folder holds no images", path=root, fix="check dataset.path")
    return samples[:limit] if limit else samples


def batches(samples: list[Sample], recipe: Recipe, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Yield (inputs, labels, n_real). The last batch is padded with zeros to
    `batch_size` for fixed-batch models; only its first n_real rows count."""
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        x = np.stack([recipe(s.open()) for s in chunk])
        n = len(chunk)
        if n < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - n, *x.shape[1:]), x.dtype)])
        yield x, np.array([s.label for s in chunk], np.int64), n
