"""The one error type a user can cause.

Everything a user can get wrong (a malformed suite, a missing checkpoint, an
absent device, an unknown runner name) raises :class:`UserError`. The CLI and
the pytest plugin print its message without a traceback; the message names
the file involved and says what to do about it.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem the user can fix: names the file (if any) and the fix."""

    def __init__(self, message: str, *, path: str | Path | None = None, fix: str | None = None):
        self.path = str(path) if path is not None else None
        self.fix = fix
        parts = []
        if self.path:
            parts.append(f"{self.path}: ")
        parts.append(message)
        if fix:
            parts.append(f"\n  fix: {fix}")
        super().__init__("".join(parts))
