"""What the tool-output readers (ais_bench, trtexec) share: the number token and reading a saved log."""

from __future__ import annotations

from pathlib import Path

from harness.errors import UserError

#: a number as C++ and Python tools print it, nan and inf included
NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?nan|[-+]?inf"


def read_log(path: str | Path, *, fix: str) -> str:
    """A saved log's text (undecodable bytes replaced: tools print what they like); a missing file is a UserError."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise UserError("no such file", path=p, fix=fix) from None
