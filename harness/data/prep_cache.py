"""Preprocessed-input cache (the documents' ``prep_bin`` step).

Each image, preprocessed by a recipe, is stored once as a float32 ``.npy``
under ``<root>/<recipe identity>/`` and read back memory-mapped, keyed by the
file's path, size and modification time: a re-run with a warm cache does no
decoding. :func:`write_bins` writes the layout ais_bench reads instead: one
raw CHW float32 ``.bin`` per image, no header, no batch dimension
(602,112 bytes at 224x224).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from harness.data.recipes import Recipe
from harness.data.samples import NpyFile, Sample, preprocess_one, preprocessed
from harness.errors import UserError
from harness.fsio import atomic_path


class PrepCache:
    def __init__(self, root: str | Path, recipe: Recipe):
        self.recipe = recipe
        self.dir = Path(root) / recipe.identity.replace(":", "_").replace("@", "_at_")
        self.dir.mkdir(parents=True, exist_ok=True)

    def key(self, s: Sample) -> str:
        if s.path is None:
            raise UserError(f"{s.name}: generated images are not cached", fix="cache files on disk only")
        st = s.path.stat()
        blob = f"{s.path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}"
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def path(self, s: Sample) -> Path:
        return self.dir / f"{self.key(s)}.npy"

    def build(self, samples: list[Sample], *, workers: int = 2, progress: bool = True) -> dict:
        """Preprocess what is not cached yet; returns counts, seconds and images/s.
        An unreadable image raises its UserError (the cache never holds a gap)."""
        todo = [s for s in samples if not self.path(s).is_file()]
        t0 = time.perf_counter()
        stream = preprocessed(todo, self.recipe, workers=workers)
        if progress:
            from tqdm import tqdm

            stream = tqdm(stream, total=len(todo), desc=f"prep {self.recipe.name}", unit="img", leave=False)
        for s, arr in stream:
            if isinstance(arr, Exception):
                raise arr
            self._save(arr, self.path(s))
        dt = time.perf_counter() - t0
        return {"built": len(todo), "cached": len(samples) - len(todo), "seconds": dt,
                "images_per_s": len(todo) / dt if todo and dt > 0 else None}

    @staticmethod
    def _save(arr: np.ndarray, dest: Path) -> None:
        with atomic_path(dest) as tmp, open(tmp, "wb") as f:
            np.save(f, arr.astype(np.float32, copy=False))

    def stream(self, samples: list[Sample], paths: list[Path] | None = None):
        """(sample, :class:`NpyFile`) in order, which :func:`batches` reads straight into its batch
        buffer; a sample not cached yet is preprocessed and stored, and one that cannot be read
        comes as (sample, its UserError), as :func:`preprocessed` gives it (``batches`` applies
        the dataset's on_corrupt policy). ``paths``: the samples' :meth:`path` where the caller has
        them already (each costs a stat and a hash)."""
        for s, p in zip(samples, paths or [self.path(s) for s in samples], strict=True):
            if not p.is_file():
                arr = preprocess_one(self.recipe, s)
                if isinstance(arr, Exception):
                    yield s, arr
                    continue
                self._save(arr, p)
            yield s, NpyFile(p)


def write_bins(samples: list[Sample], recipe: Recipe, out_dir: str | Path, *, workers: int = 2) -> list[Path]:
    """One raw float32 CHW ``<stem>.bin`` per image, as ais_bench ``--input`` reads."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    stems = [Path(s.name).stem for s in samples]
    # ImageNet val names are unique; class folders may repeat a name, so keep the folder then
    unique = len(set(stems)) == len(stems)
    for s, arr in preprocessed(samples, recipe, workers=workers):
        if isinstance(arr, Exception):
            raise arr
        stem = Path(s.name).stem if unique else str(Path(s.name).with_suffix("")).replace("/", "__")
        dest = out_dir / f"{stem}.bin"
        np.ascontiguousarray(arr, dtype="<f4").tofile(dest)
        written.append(dest)
    return written
