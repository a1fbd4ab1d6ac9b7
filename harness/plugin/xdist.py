"""pytest-xdist: one run shared by every worker, one device per worker.

The controller makes the run id and hands it to each worker; each worker pins
its own device before any framework starts; the controller marks the run
finished (or interrupted) when every worker is done.
"""

from __future__ import annotations

import os

import pytest

from harness.plugin.options import baselines_path, store_spec, where, write_side_report
from harness.results import db
from harness.results.store import new_run_id
from harness.runners import devices
from harness.session import finish_shared_run as finish_run
from harness.vocab import DEVICE_FAMILIES

PIN_KEY = pytest.StashKey["dict"]()  # pytest-xdist worker: {family: device index} it was given
_RUN_KEY = pytest.StashKey["dict"]()  # pytest-xdist controller: the run its workers share


def is_controller(config) -> bool:
    return not hasattr(config, "workerinput") and getattr(config.option, "dist", "no") != "no" \
        and bool(getattr(config.option, "numprocesses", None))


def configure(config) -> None:
    if is_controller(config):
        config.stash[_RUN_KEY] = {"run_id": new_run_id(), "failed_nodes": []}
    elif hasattr(config, "workerinput"):
        # each xdist worker gets its own device now, before any framework starts
        config.stash[PIN_KEY] = devices.pin_worker(worker(config)[1], families=selected_families(config))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """Hand every worker the run id they all store their results under."""
    node.workerinput["harness_run_id"] = node.config.stash[_RUN_KEY]["run_id"]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    if error:  # a worker crashed: the run cannot count as finished
        node.config.stash[_RUN_KEY]["failed_nodes"].append(node.gateway.id)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """`-n auto` with -m naming accelerator families: one worker per device of them."""
    fams = selected_families(config)
    n = devices.device_count(fams) if fams else 0
    return n or None


def selected_families(config) -> list[str]:
    """The accelerator families the -m expression names."""
    words = (config.getoption("markexpr", "") or "").replace("(", " ").replace(")", " ").split()
    return [d.name for d in DEVICE_FAMILIES if d.detector != "host" and d.name in words]


def worker(config) -> tuple[str | None, int, int]:
    """(shared run id, worker number, worker count); (None, 0, 1) without xdist."""
    wi = getattr(config, "workerinput", None)
    if not wi:
        return None, 0, 1
    return wi.get("harness_run_id"), int(str(wi["workerid"]).lstrip("gw") or 0), int(wi.get("workercount", 1))


def finish_shared_run(config, interrupted: bool) -> None:
    """xdist controller: every worker is done; the shared run becomes final now.
    A worker that already gave it a status (interrupted, incomplete) keeps it."""
    run = config.stash[_RUN_KEY]
    spec = store_spec(config)
    if not db.is_url(spec) and not os.path.isfile(spec):
        return  # no case ran: no store, no run
    run.update(finish_run(spec, run["run_id"], "interrupted" if interrupted or run["failed_nodes"] else "finished"))
    out = config.getoption("--harness-report")
    if out and run.get("status"):
        write_side_report(config, spec, out, baselines_path(config))


def summary_lines(config, report_failed: bool) -> list[str]:
    """The controller's lines under pytest's summary: the shared run, its store and report."""
    run = config.stash[_RUN_KEY]
    workers = getattr(config.option, "numprocesses", None)
    n = run.get("results", 0)
    lines = [f"run {run['run_id']} ({workers} workers): {run.get('status') or 'no case stored'}, "
             f"{n} result{'' if n == 1 else 's'}",
             f"results: {where(store_spec(config))}"]
    if run.get("note"):
        lines.append(run["note"])
    out = config.getoption("--harness-report")
    if out and run.get("status") and not report_failed:
        lines.append(f"report:  {os.path.abspath(out)}")
    return lines
