"""Samples (an image and its label) and the streams that feed them to a runner.

Decoding and preprocessing overlap inference in a small thread pool; a
corrupt image is an error naming the file, or is skipped and named.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from harness.data.recipes import Recipe
from harness.errors import UserError


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


def preprocessed(samples: list[Sample], recipe: Recipe, *, workers: int = 0, lookahead: int = 16):
    """Yield (sample, CHW array or the UserError it raised), in order.

    With ``workers`` > 0, decoding and preprocessing run in a thread pool
    (Pillow and numpy release the GIL) at most ``lookahead`` images ahead of
    the consumer, so they overlap inference and memory stays flat in the
    dataset's size.
    """
    def one(s: Sample):
        try:
            return recipe(s.open())
        except UserError as exc:
            return exc

    if workers <= 0:
        for s in samples:
            yield s, one(s)
        return

    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        it = iter(samples)
        for s in it:
            pending.append((s, pool.submit(one, s)))
            if len(pending) >= lookahead:
                break
        while pending:
            s, fut = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(one, nxt)))
            yield s, fut.result()


def batches(samples: list[Sample], recipe: Recipe, batch_size: int, *, on_corrupt: str = "error",
            skipped: list | None = None, workers: int = 0, source=None
            ) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Yield (inputs, labels, n_real). The last batch is padded with zeros to
    `batch_size` for fixed-batch models; only its first n_real rows count.

    An unreadable image raises :class:`UserError` naming it; with
    ``on_corrupt="skip"`` it is left out and appended, with the reason, to
    ``skipped`` (never dropped silently). ``source`` (an iterable of
    (sample, array)) replaces decoding, e.g. a preprocessed-input cache.
    """
    if on_corrupt not in ("error", "skip"):
        raise UserError(f"unknown on_corrupt policy {on_corrupt!r}", fix="use 'error' or 'skip'")
    stream = source if source is not None else preprocessed(samples, recipe, workers=workers,
                                                            lookahead=max(16, 2 * batch_size))
    xs, ys = [], []

    def emit():
        x = np.stack(xs)
        n = len(xs)
        if n < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - n, *x.shape[1:]), x.dtype)])
        return x, np.array(ys, np.int64), n

    for s, arr in stream:
        if isinstance(arr, Exception):
            if on_corrupt == "skip":
                if skipped is not None:
                    skipped.append((s.name, str(arr).split("\n")[0]))
                continue
            raise arr
        xs.append(arr)
        ys.append(s.label)
        if len(xs) == batch_size:
            yield emit()
            xs, ys = [], []
    if xs:
        yield emit()
