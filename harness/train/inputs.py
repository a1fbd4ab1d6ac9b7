"""Training inputs: generated images whose labels can be learned, and the
documented training augmentation.

The generated set gives every class its own colour and stripe texture (plus
noise and a random phase), so a network can learn the labels and its loss
really falls; photos-of-nothing with random labels would not. The augmentation
is the ModelZoo training pipeline's (RandomCropDecodeResize, i.e. a random
resized crop with scale (0.08, 1) and ratio (3/4, 4/3), then a horizontal flip
with p 0.5), as a declared, named recipe whose identity goes into the result.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from harness.data.samples import Sample


@dataclass(frozen=True)
class Augment:
    """A training augmentation recipe; ``name: none`` is the evaluation crop only."""

    name: str = "random_resized_crop_flip"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5

    @property
    def identity(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True)
        return f"{self.name}:{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


AUGMENTS = {"random_resized_crop_flip": Augment(), "none": Augment("none", (1.0, 1.0), (1.0, 1.0), 0.0)}


def learnable_images(n: int, classes: int, side: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` HWC uint8 images of ``side`` x ``side`` (twice the training size,
    so crops have room) and their labels: class c has its own mean colour and
    stripe frequency/orientation; noise and phase differ per image."""
    rng = np.random.default_rng(seed)
    palette = np.random.default_rng(1234).uniform(30, 225, size=(classes, 3))
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    out = np.empty((n, side, side, 3), np.uint8)
    for i, c in enumerate(labels):
        freq = 2 + (c % 5) * 2
        angle = np.pi * (c // 5) / max(1, (classes + 4) // 5)
        phase = rng.uniform(0, 2 * np.pi)
        stripes = np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
        img = palette[c][None, None, :] + 40 * stripes[..., None] + rng.normal(0, 10, (side, side, 3))
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out, labels.astype(np.int32)


def load_images(files: list[list], side: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode [path, label] pairs into a pool of ``side`` x ``side`` HWC uint8
    images (shorter side resized to ``side``, centre crop), as the generated
    pool is, so the augmentation has room for its crops."""
    from PIL import Image

    out = np.empty((len(files), side, side, 3), np.uint8)
    for i, (path, label) in enumerate(files):
        im = Sample(Path(path).name, int(label), Path(path)).open()  # harness.data's decoder: RGB, named errors
        w, h = im.size
        scale = side / min(w, h)
        im = im.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.BILINEAR)
        left, top = (im.size[0] - side) // 2, (im.size[1] - side) // 2
        out[i] = np.asarray(im.crop((left, top, left + side, top + side)))
    return out, np.asarray([int(label) for _, label in files], np.int32)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


def augment(img: np.ndarray, size: int, aug: Augment, rng: np.random.Generator) -> np.ndarray:
    """One augmented HWC uint8 image of ``size`` x ``size``."""
    h, w = img.shape[:2]
    if aug.name != "none":
        area = h * w
        for _ in range(10):  # torchvision's RandomResizedCrop: 10 tries, then the centre crop
            target = area * rng.uniform(*aug.scale)
            ratio = np.exp(rng.uniform(np.log(aug.ratio[0]), np.log(aug.ratio[1])))
            cw, ch = int(round(np.sqrt(target * ratio))), int(round(np.sqrt(target / ratio)))
            if 0 < cw <= w and 0 < ch <= h:
                top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
                img = img[top:top + ch, left:left + cw]
                break
        if rng.uniform() < aug.flip_p:
            img = img[:, ::-1]
    return _resize(np.ascontiguousarray(img), size)


def normalise(batch: np.ndarray, mean, std) -> np.ndarray:
    """NHWC uint8 -> NCHW float32 with the evaluation recipe's mean/std (0..255 scale)."""
    x = (batch.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


class TrainStream:
    """Batches for training: ``next_batch()`` draws augmented images at random
    from the pool; ``fixed_batch()`` is the same un-augmented batch every time
    (for the learns check)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, size: int, mean, std, aug: Augment,
                 seed: int = 0, rank: int = 0):
        self.images, self.labels, self.size = images, labels, size
        self.mean, self.std, self.aug = mean, std, aug
        self.rng = np.random.default_rng(seed * 1000 + rank)

    def next_batch(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self.rng.integers(0, len(self.images), batch_size)
        imgs = np.stack([augment(self.images[i], self.size, self.aug, self.rng) for i in idx])
        return normalise(imgs, self.mean, self.std), self.labels[idx]

    def fixed_batch(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        idx = np.arange(batch_size) % len(self.images)
        imgs = np.stack([_resize(self.images[i], self.size) for i in idx])
        return normalise(imgs, self.mean, self.std), self.labels[idx]
