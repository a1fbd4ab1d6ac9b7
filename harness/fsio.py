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
    tmp = _temp_beside(dest, "file")
    try:
        yield tmp
        try:
            move_into_place(tmp, dest, mode=mode)
        except OSError as exc:
            raise UserError(f"cannot write the file: {exc.strerror or exc}", path=dest,
                            fix="choose a writable path (not a directory; check its permissions)") from None
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


def check_writable(dest: str | Path, *, what: str = "output file") -> Path:
    """Fail now, before any work, if ``dest`` cannot be written: a directory in
    its place, a folder that cannot be made, or one where no file can be
    created. Makes the folders the write would make anyway; leaves no file."""
    dest = Path(dest)
    if dest.is_dir():
        raise UserError(f"the {what} is a directory", path=dest, fix="name a file in it, e.g. out/report.html")
    _temp_beside(dest, what).unlink()
    return dest


def _temp_beside(dest: Path, what: str) -> Path:
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as exc:
        raise UserError(f"cannot write the {what}: cannot create a file in {dest.parent or '.'} "
                        f"({exc.strerror or exc})", path=dest,
                        fix="choose a writable path (check the folder exists and its permissions)") from None
    os.close(fd)
    return Path(name)


# -- reading what users write ------------------------------------------------------------------------

_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


def read_user_text(path: str | Path, *, what: str = "file") -> str:
    """The text of a file a user wrote (suite, baselines, thresholds, label file).

    UTF-8, or any text with a byte-order mark (UTF-8, or UTF-16 as Windows
    editors save "Unicode"). Anything else, or a file that cannot be read, is
    a :class:`UserError` naming the file, the first bad byte's line and the fix.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read this {what}: {exc.strerror or exc}", path=path,
                        fix="check the path and its permissions") from None
    for bom, enc in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(enc)
            except UnicodeDecodeError:
                break
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise UserError(f"this {what} is not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line}, column {col} "
                        f"(probably Latin-1 or another legacy encoding)", path=path,
                        fix=f"save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 {path.name} > {path.name}.utf8` "
                            f"and move that over it") from None
