"""A pytest plugin that benchmarks/main_job.py loads into the main job
(through PYTEST_PLUGINS): one JSON line per case with its wall time, the
process's CPU time, its resident memory at the end and its peak during the
case (VmHWM, reset before each case through /proc/self/clear_refs).

It measures; it changes nothing in the run. The file is $MAIN_JOB_PROBE.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

_OUT = os.environ.get("MAIN_JOB_PROBE")
_open: dict[str, dict] = {}


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:  # "5" resets the peak resident set size (Linux, proc(5))
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _write(rec: dict) -> None:
    if _OUT:
        with open(_OUT, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")


def pytest_sessionstart(session):
    _write({"event": "sessionstart", "t": time.time(), "rss_kb": _status_kb("VmRSS"), "hwm_kb": _status_kb("VmHWM")})


def pytest_runtest_logstart(nodeid, location):
    t = os.times()
    _open[nodeid] = {"t0": time.time(), "cpu0": t.user + t.system, "child0": t.children_user + t.children_system,
                     "reset": _reset_peak()}


def pytest_runtest_logreport(report):
    rec = _open.get(report.nodeid)
    if rec is None or "outcome" in rec or (report.when != "call" and report.outcome == "passed"):
        return
    rec["outcome"] = report.outcome if report.when == "call" else f"{report.outcome}@{report.when}"
    if report.skipped and isinstance(report.longrepr, tuple):  # (path, line, "Skipped: reason")
        rec["reason"] = str(report.longrepr[2]).removeprefix("Skipped: ")
    elif report.failed:
        lines = [ln for ln in report.longreprtext.splitlines() if ln.strip()]
        rec["reason"] = lines[-1][:300] if lines else ""


def pytest_runtest_logfinish(nodeid, location):
    rec = _open.pop(nodeid, None)
    if rec is None:
        return
    t = os.times()
    _write({"event": "case", "nodeid": nodeid, "start": rec["t0"], "wall_s": time.time() - rec["t0"],
            "cpu_s": t.user + t.system - rec["cpu0"],
            "children_cpu_s": t.children_user + t.children_system - rec["child0"],
            "rss_kb": _status_kb("VmRSS"), "hwm_kb": _status_kb("VmHWM") if rec["reset"] else None,
            "outcome": rec.get("outcome", "?"), "reason": rec.get("reason", "")})


def pytest_sessionfinish(session, exitstatus):
    _write({"event": "sessionfinish", "t": time.time(), "rss_kb": _status_kb("VmRSS")})
