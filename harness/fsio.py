"""Writing files so that a reader never sees half of one.

Every file the harness writes (reports, README tables, exports, cached
inputs, interchange files) is written beside its destination under a
temporary name and moved into place with ``os.replace``, which is atomic on
one filesystem. A failed write leaves the old file, or nothing.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from harness.errors import UserError


@contextlib.contextmanager
def atomic_path(dest: str | Path, *, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it replaces ``dest``.

    The caller (or a library it calls) writes the temporary file; if the block
    raises, the temporary file is removed and ``dest`` is left as it was.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as exc:
        raise UserError(f"cannot write here: {exc.strerror or exc}", path=dest,
                        fix="choose a writable path (check the folder exists and its permissions)") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        move_into_place(tmp, dest, mode=mode)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def move_into_place(src: str | Path, dest: str | Path, *, mode: int | None = 0o644) -> Path:
    """Move a finished file (written beside ``dest``, on the same filesystem) over ``dest`` atomically."""
    if mode is not None:
        os.chmod(src, mode)
    os.replace(src, dest)
    return Path(dest)


def write_text(dest: str | Path, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``dest`` atomically (see :func:`atomic_path`)."""
    with atomic_path(dest, mode=0o644) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(dest)


def write_bytes(dest: str | Path, data: bytes) -> Path:
    with atomic_path(dest, mode=0o644) as tmp:
        tmp.write_bytes(data)
    return Path(dest)
