"""The one error type a user can cause.

Everything a user can get wrong (a malformed suite, a missing checkpoint, an
absent device, an unknown runner name) raises :class:`UserError`. The CLI and
the pytest plugin print its message without a traceback; the message names
the file involved and says what to do about it.
"""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path


class UserError(Exception):
    """A problem the user can fix: names the file (if any) and the fix."""

    def __init__(self, message: str, *, path: str | Path | None = None, fix: str | None = None):
        self.message = message  # without the path and the fix, for re-raising with a path
        self.path = str(path) if path is not None else None
        self.fix = fix
        parts = []
        if self.path:
            parts.append(f"{self.path}: ")
        parts.append(message)
        if fix:
            parts.append(f"\n  fix: {fix}")
        super().__init__("".join(parts))


def log_tail(text: str, lines: int = 15, *, empty: str = "(nothing printed)") -> str:
    """The last ``lines`` lines of a tool's output, for the error that quotes it (``empty`` when it printed none)."""
    return "\n".join(text.strip().splitlines()[-lines:]) or empty


class CaseSkipped(Exception):
    """A case that cannot run here; the message says what is missing."""


class CaseFailed(Exception):
    """A case that ran and missed its tolerance (or a check that can fail did)."""


class ExitCode(IntEnum):
    """The exit codes of every `harness` command and of `pytest` with the plugin (the README's table).

    The plugin maps pytest's own outcomes onto this table (pytest's 2 "interrupted"
    becomes FAILED, its 4 "usage error" USAGE, its 5 "no tests collected" stays
    NOTHING_SELECTED), so a code means one thing whichever way a run was started.
    """

    OK = 0  # all passed (skips allowed); gate/compare: no regression
    FAILED = 1  # a case failed or errored, or the run was interrupted; gate/compare: a regression or failed claim
    USAGE = 2  # bad command line
    INPUT = 3  # a problem with the user's input: bad suite, missing or foreign file, bad store
    NOTHING_COMPARED = 4  # gate/compare: no candidate had a reference to compare with
    NOTHING_SELECTED = 5  # run / pytest: the selection (-m, -k, --model, --batch-size) matched no case
    INCONCLUSIVE = 6  # gate/compare: a candidate could not be judged (contended, or its interval too wide)
    NOT_STORED = 7  # run: results measured but the store could not take them (they are kept in the journal)
