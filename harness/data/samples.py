"""Samples (an image and its label) and the streams that feed them to a runner.

Decoding and preprocessing overlap inference in a small thread pool; a
corrupt image is an error naming the file, or is skipped and named.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
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


def preprocess_one(recipe: Recipe, s: Sample):
    """One image through the recipe: its CHW array, or the UserError it raised (returned, not raised)."""
    try:
        return recipe(s.open())
    except UserError as exc:
        return exc


def _chunk(recipe: Recipe, chunk: list[Sample]) -> list:
    """A process-pool task: several images per round trip, so the pickling cost is shared."""
    return [preprocess_one(recipe, s) for s in chunk]


PROCESS_CHUNK = 4


def preprocessed(samples: list[Sample], recipe: Recipe, *, workers: int = 0, lookahead: int = 16,
                 processes: bool = False):
    """Yield (sample, CHW array or the UserError it raised), in order.

    With ``workers`` > 0, decoding and preprocessing run in a thread pool
    (Pillow and numpy release the GIL) at most ``lookahead`` images ahead of
    the consumer, so they overlap inference and memory stays flat in the
    dataset's size. With ``processes=True`` they run in a pool of
    ``workers`` processes instead (``workers`` <= 0: one per core), in
    chunks of ``PROCESS_CHUNK`` images: decoding then scales with the cores
    instead of sharing one interpreter's GIL-bound parts.
    """
    if processes:
        yield from _in_processes(samples, recipe, workers, lookahead)
        return
    if workers <= 0:
        for s in samples:
            yield s, preprocess_one(recipe, s)
        return

    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        it = iter(samples)
        for s in it:
            pending.append((s, pool.submit(preprocess_one, recipe, s)))
            if len(pending) >= lookahead:
                break
        while pending:
            s, fut = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(preprocess_one, recipe, nxt)))
            yield s, fut.result()


def _in_processes(samples: list[Sample], recipe: Recipe, workers: int, lookahead: int):

    workers = workers if workers > 0 else (os.cpu_count() or 1)
    chunks = [samples[i:i + PROCESS_CHUNK] for i in range(0, len(samples), PROCESS_CHUNK)]
    ahead = max(2 * workers, lookahead // PROCESS_CHUNK)
    # spawn: the parent may hold ONNX Runtime's or MindSpore's threads, which fork does not carry safely
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending: deque = deque()
        it = iter(chunks)
        for c in it:
            pending.append((c, pool.submit(_chunk, recipe, c)))
            if len(pending) >= ahead:
                break
        while pending:
            c, fut = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(_chunk, recipe, nxt)))
            yield from zip(c, fut.result())


def batches(samples: list[Sample], recipe: Recipe, batch_size: int, *, on_corrupt: str = "error",
            skipped: list | None = None, workers: int = 0, source=None, processes: bool = False,
            prefetch: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Yield (inputs, labels, n_real). The last batch is padded with zeros to
    `batch_size` for fixed-batch models; only its first n_real rows count.

    An unreadable image raises :class:`UserError` naming it; with
    ``on_corrupt="skip"`` it is left out and appended, with the reason, to
    ``skipped`` (never dropped silently). ``source`` (an iterable of
    (sample, array)) replaces decoding, e.g. a preprocessed-input cache.

    With ``prefetch`` the next batch is assembled (read from the cache or the
    decoders, stacked) in a background thread while the caller runs the
    current one (the runtimes release the GIL during inference). Off by
    default: on a 2-core host whose cores ONNX Runtime's threads already use,
    interleaved rounds (benchmarks/eval_pipeline.py) showed no consistent gain
    (slower in 7 of 8 rounds in one series, faster in 3 of 5 in the next);
    it can pay where a core is free.
    """
    if on_corrupt not in ("error", "skip"):
        raise UserError(f"unknown on_corrupt policy {on_corrupt!r}", fix="use 'error' or 'skip'")
    gen = _batches(samples, recipe, batch_size, on_corrupt, skipped, workers, source, processes)
    return _prefetched(gen) if prefetch else gen


def _prefetched(gen, depth: int = 2):
    """Run a generator in a thread, ``depth`` items ahead; its exceptions surface in the consumer."""

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in gen:
                while not stop.is_set():
                    try:
                        q.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((True, done))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put((False, exc))

    t = threading.Thread(target=produce, daemon=True, name="harness-batches")
    t.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        t.join(timeout=5)


class NpyFile:
    """A float32 .npy file that :func:`batches` reads straight into its batch row.

    One open and one read of the file's bytes into the batch buffer, instead
    of a memory map whose pages fault in one by one during a stack: what the
    preprocessed-input cache hands out. ``np.asarray(f)`` loads it whole."""

    __slots__ = ("path",)

    def __init__(self, path: Path):
        self.path = Path(path)

    def _header(self, f) -> tuple[tuple, bool, np.dtype]:
        from numpy.lib import format as npf

        version = npf.read_magic(f)
        read = npf.read_array_header_1_0 if version == (1, 0) else npf.read_array_header_2_0
        return read(f)

    @property
    def shape(self) -> tuple:
        with open(self.path, "rb") as f:
            return self._header(f)[0]

    def read_into(self, out: np.ndarray) -> None:
        """Fill ``out`` (C-contiguous float32 of the file's shape) from the file."""
        with open(self.path, "rb", buffering=0) as f:
            shape, fortran, dtype = self._header(f)
            if tuple(shape) != out.shape:
                raise UserError(f"{self.path}: holds shape {tuple(shape)}, not {out.shape}",
                                fix="delete the file (a cache rebuilds it)")
            if fortran or dtype != out.dtype or not out.flags.c_contiguous:
                out[...] = np.load(self.path)  # not the cache's own layout: the general reader
                return
            view = memoryview(out).cast("B")
            got = f.readinto(view)
            while got < view.nbytes:  # a short read (signals, pipes): read on
                more = f.readinto(view[got:])
                if not more:
                    raise UserError(f"{self.path}: truncated .npy ({got} of {view.nbytes} bytes)",
                                    fix="delete the file (a cache rebuilds it)")
                got += more

    def __array__(self, dtype=None, copy=None):
        arr = np.load(self.path)
        return arr if dtype is None else arr.astype(dtype)


def _batches(samples, recipe, batch_size, on_corrupt, skipped, workers, source, processes):
    stream = source if source is not None else preprocessed(samples, recipe, workers=workers,
                                                            lookahead=max(16, 2 * batch_size),
                                                            processes=processes)
    buf, ys, layout = None, [], None

    for s, arr in stream:
        if isinstance(arr, Exception):
            if on_corrupt == "skip":
                if skipped is not None:
                    skipped.append((s.name, str(arr).split("\n")[0]))
                continue
            raise arr
        npy = isinstance(arr, NpyFile)
        if layout is None:  # the first image sets every row's shape (a cache file's header, read once)
            layout = (tuple(arr.shape), np.dtype(np.float32) if npy else arr.dtype)
        if buf is None:  # one fresh buffer per batch: the consumer may still hold the last one
            buf = np.empty((batch_size, *layout[0]), layout[1])
        row = buf[len(ys)]
        if npy:
            arr.read_into(row)  # checks the file's shape against the row's
        elif arr.shape != row.shape:  # no broadcasting one image into another's shape
            raise UserError(f"{s.name}: preprocessed to shape {tuple(arr.shape)}, the batch's others to "
                            f"{row.shape}", fix="a recipe must give every image the same shape")
        else:
            row[...] = arr
        ys.append(s.label)
        if len(ys) == batch_size:
            yield buf, np.array(ys, np.int64), batch_size
            buf, ys = None, []
    if ys:
        buf[len(ys):] = 0  # the padding rows of a fixed-batch model
        yield buf, np.array(ys, np.int64), len(ys)
