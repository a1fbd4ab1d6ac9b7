"""Exported model files, cached on disk by what they were made from.

The cache key covers everything an export depends on (the suite's source,
the checkpoint's sha256, the input shape, the format, the versions of the
exporting code), so an unchanged model is exported once; the artifact's own
identity is the sha256 of its bytes. Files are written to a temporary name
and renamed into place, so an interrupted export never leaves a half file
that a later run would trust.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import harness
from harness.config.suite import Suite
from harness.errors import UserError
from harness.fsio import move_into_place, write_text
from harness.vocab import FORMATS

CACHE_ENV = "HARNESS_CACHE"
SUFFIX = {f: s for f, s in FORMATS.items() if s}


@dataclass
class Artifact:
    format: str
    path: Path
    sha256: str
    batch_size: int
    export_s: float | None  # None when taken from the cache or supplied by the user
    cached: bool
    command: str | None = None  # the conversion command, for formats made by a tool (atc)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _code_fingerprint(here: Path | None = None) -> str:
    """Hash of the code that shapes an export: changing it invalidates the cache.

    Every module of the :mod:`harness.models` package (networks, cards and
    their fixes, weights, exporters, this cache) is hashed, found by walking
    the package itself, so a module added, moved or renamed there is covered
    without a list to keep up to date. Training lives in :mod:`harness.train`,
    a layer above, which nothing here imports: a trained network reaches an
    export only as a checkpoint, whose sha256 is in the key, so editing
    training code leaves cached exports valid.
    """
    h = hashlib.sha256(harness.__version__.encode())
    here = here or Path(__file__).parent
    modules = sorted(here.rglob("*.py"))
    if not modules:  # a broken install: refuse rather than cache without a fingerprint
        raise RuntimeError(f"no modules found under {here} to fingerprint the export code")
    for p in modules:
        h.update(str(p.relative_to(here)).encode())
        h.update(p.read_bytes())
    for dist in ("mindspore", "mindcv"):
        try:
            h.update(importlib.metadata.version(dist).encode())
        except importlib.metadata.PackageNotFoundError:
            pass
    return h.hexdigest()[:16]


class ArtifactCache:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root or os.environ.get(CACHE_ENV) or ".harness/cache")
        self._fingerprint = None
        self._ckpt_sha: dict[Path, str] = {}

    def key(self, suite: Suite, fmt: str, batch_size: int, checkpoint: Path | None = None) -> str:
        """The export's cache key; ``checkpoint`` (a trained one) stands in for source.checkpoint."""
        src = suite.source
        ckpt = checkpoint or suite.resolve(src.checkpoint)
        if ckpt is not None:
            if not ckpt.is_file():
                raise UserError("checkpoint not found", path=ckpt, fix="fix source.checkpoint in the suite")
            if ckpt not in self._ckpt_sha:
                self._ckpt_sha[ckpt] = sha256_file(ckpt)
        if self._fingerprint is None:
            self._fingerprint = _code_fingerprint()
        blob = json.dumps({
            "arch": src.arch, "num_classes": src.num_classes, "seed": src.seed, "init": src.init,
            "checkpoint": self._ckpt_sha.get(ckpt) if ckpt else None,
            "shape": [batch_size, suite.input.channels, suite.input.size, suite.input.size],
            "format": fmt, "code": self._fingerprint,
        }, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def lookup(self, key: str, fmt: str) -> Path | None:
        """The cached file, if present and its bytes still hash to what was recorded
        (a file changed or damaged since is exported again, never trusted)."""
        path = self.root / key / f"model{SUFFIX[fmt]}"
        meta = self.root / key / "meta.json"
        if not (path.is_file() and meta.is_file()):
            return None
        try:
            recorded = json.loads(meta.read_text())["sha256"]
        except (ValueError, KeyError):
            return None
        return path if sha256_file(path) == recorded else None

    def store(self, key: str, fmt: str, produce, meta: dict) -> tuple[Path, str]:
        """Run `produce(tmp_path) -> written_path` and move the result into the cache."""
        dest_dir = self.root / key
        new = not dest_dir.exists()
        dest_dir.mkdir(parents=True, exist_ok=True)
        try:
            with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".tmp-") as tmp:
                dest = move_into_place(produce(Path(tmp) / "model"), dest_dir / f"model{SUFFIX[fmt]}")
        except BaseException:
            if new and not any(dest_dir.iterdir()):
                dest_dir.rmdir()  # a failed export leaves no empty folder behind
            raise
        sha = sha256_file(dest)
        meta = {**meta, "sha256": sha, "format": fmt, "created": time.time()}
        write_text(dest_dir / "meta.json", json.dumps(meta, indent=1, default=str))
        return dest, sha

    def meta(self, path: Path) -> dict:
        return json.loads((path.parent / "meta.json").read_text())

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
