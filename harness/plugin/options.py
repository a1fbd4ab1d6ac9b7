"""The plugin's command-line options and what the rest of the plugin reads from them.

`harness run` turns its own options into these (``--store`` -> ``--harness-store``);
everything else it passes to pytest unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.config.baselines import locate_baselines
from harness.errors import UserError
from harness.reports import write_report
from harness.results import db
from harness.results.store import redact
from harness.vocab import DEVICE_NAMES, SCENARIOS

TIMING_OPTIONS = {"warmup": "--harness-warmup", "min_iterations": "--harness-min-iterations",
                  "min_duration_s": "--harness-min-duration"}
# what went wrong with the user's input (suite, store, checkpoint, dataset ...), for
# the exit code (3): see input_errors()
_INPUT_ERRORS_KEY = pytest.StashKey[list]()
REPORT_FAILED_KEY = pytest.StashKey[str]()


def add_options(parser) -> None:
    g = parser.getgroup("harness", "model benchmark harness")
    g.addoption("--harness-store", default=None,
                help="results store: an SQLite file or postgresql://USER@HOST:PORT/DB; default $HARNESS_STORE or "
                     ".harness/results.sqlite")
    g.addoption("--harness-cache", default=None,
                help="artifact cache folder; default $HARNESS_CACHE or .harness/cache")
    g.addoption("--harness-baselines", default=None,
                help="baselines file; default baselines.yaml in the rootdir (none if absent)")
    g.addoption("--harness-report", default=None, help="write the HTML report here when the run ends")
    g.addoption("--harness-warmup", type=int, default=None, help="override every suite's timing.warmup")
    g.addoption("--harness-min-iterations", type=int, default=None, help="override timing.min_iterations")
    g.addoption("--harness-min-duration", type=float, default=None, help="override timing.min_duration_s")
    g.addoption("--harness-progress", action="store_true", default=False,
                help="show progress instead of pytest's dots: a live line on a terminal (current case, done, "
                     "left, ETA), one line per finished case otherwise (`harness run` turns it on)")
    g.addoption("--harness-require", action="append", default=[], choices=list(DEVICE_NAMES), metavar="FAMILY",
                help="fail the run (exit 1) if it measured nothing on this device family (repeatable)")
    g.addoption("--harness-scenario", default=None, choices=SCENARIOS,
                help="run throughput cases under this MLPerf LoadGen scenario (overrides the suites' scenario:)")
    g.addoption("--harness-model", action="append", default=None, metavar="NAME",
                help="only the cases of this model (the suite's model: key, exactly); repeat for several")
    g.addoption("--harness-batch-size", action="append", type=int, default=None, metavar="N",
                help="only the cases of this batch size (exactly: 1 is not 16); repeat for several")


def input_errors(config) -> list[str]:
    """The input errors of this run so far: a suite that did not collect, a case
    that stopped on a UserError (bad checkpoint, dataset, model file, a batch
    that cannot fit), an unusable store."""
    return config.stash.setdefault(_INPUT_ERRORS_KEY, [])


def timing_override(config) -> dict:
    return {k: config.getoption(opt) for k, opt in TIMING_OPTIONS.items()}


def baselines_path(config) -> Path | None:
    return locate_baselines(config.getoption("--harness-baselines"), config.rootpath)


def store_spec(config) -> str:
    return config.getoption("--harness-store") or db.default_spec()  # $HARNESS_STORE, else .harness/results.sqlite


def where(spec: str) -> str:
    return redact(spec) if db.is_url(spec) else os.path.abspath(spec)


def write_side_report(config, spec, out, baselines) -> bool:
    """A side output: checked at the start; if it still fails, the results stay
    stored and the run's exit code is the cases' own."""
    try:
        write_report(spec, out, baselines=baselines)
        return True
    except UserError as exc:
        config.stash[REPORT_FAILED_KEY] = str(exc)
        return False
