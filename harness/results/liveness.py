"""Which stored runs are still alive, and which clocks were off.

A run is stored as ``running`` when it starts and marked finished (or
interrupted, incomplete) at its end. A process killed with SIGKILL, or a host
that lost power, never gets to the end: its run stays ``running`` for ever.
Readers show such a run as ``abandoned``, judged by

* its process: the store records the writer's pid and host. On this host, a
  pid that no longer exists means the run is dead, whatever its age;
* its age: a run of another host (whose processes cannot be seen from here),
  or of a store written before pids were recorded, that has been running for
  longer than $HARNESS_ABANDONED_AFTER_H hours (default 24).

An abandoned run is never a gate's candidate nor anybody's baseline.
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone

ABANDONED_ENV = "HARNESS_ABANDONED_AFTER_H"
DEFAULT_ABANDONED_AFTER_H = 24.0
SKEWED_S = 120.0  # the store's rule (store.SKEW_S): a clock this far off is flagged


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def _age_h(started_at: str | None) -> float | None:
    try:
        start = datetime.fromisoformat(str(started_at))
    except ValueError:
        return None
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - start).total_seconds() / 3600


def is_abandoned(run: dict) -> bool:
    if run.get("status") != "running":
        return False
    pid, host = run.get("pid"), run.get("host")
    if pid and host == platform.node():
        return not _alive(int(pid))
    try:
        bound = float(os.environ.get(ABANDONED_ENV) or DEFAULT_ABANDONED_AFTER_H)
    except ValueError:
        bound = DEFAULT_ABANDONED_AFTER_H
    age = _age_h(run.get("started_at"))
    return age is not None and age > bound


def mark_abandoned(run: dict) -> dict:
    """The run as readers show it: a dead 'running' run becomes 'abandoned'
    (the stored status, kept under ``stored_status``, is not changed)."""
    if is_abandoned(run):
        run["stored_status"] = run["status"]
        run["status"] = "abandoned"
    return run


def clock_note(run: dict) -> str | None:
    """'clock-skewed ...' when the run's host clock was far from the store's."""
    skew = run.get("clock_skew_s")
    if skew is None or abs(skew) < SKEWED_S:
        return None
    way = "behind" if skew < 0 else "ahead of"
    return (f"run {run['run_id']} is clock-skewed: its host's clock was {_span(abs(skew))} {way} the store's; "
            f"its start time is shown as that clock read it, and the store's order (run #{run.get('seq')}) is used")


def _span(s: float) -> str:
    for unit, n in (("days", 86400), ("h", 3600), ("min", 60)):
        if s >= n:
            return f"{s / n:.1f} {unit}"
    return f"{s:.0f} s"
