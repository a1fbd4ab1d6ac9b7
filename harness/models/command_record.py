"""The JSON record kept beside a converted artifact (an OM, a TensorRT engine): the command that made it.

A result can then say how its artifact was made, and a cached artifact can be
told apart from one a user built by hand (no record)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from harness.fsio import write_text


def write(path: Path, cmd: list[str], **extra) -> Path:
    """Store ``cmd`` (as one shell line and as argv) and ``extra`` at ``path``, atomically."""
    return write_text(path, json.dumps({"command": shlex.join(cmd), "argv": cmd, **extra}, indent=1))


def command(path: Path) -> str | None:
    """The recorded command line, or None when there is no readable record."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))["command"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
