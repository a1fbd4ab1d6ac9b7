"""The pytest plugin: every `suite.yaml` is collected as one item per case.

    pytest suites/se_resnext50 -m ascend310p     # one model, one device family
    pytest suites -m "cpu and throughput"        # every CPU throughput case

Loaded by the repository's root conftest.py (or `-p harness.plugin`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import hookspec
from harness.config.baselines import load_baselines, locate_baselines
from harness.errors import UserError
from harness.plan import Case, build_plan, read_suite, validate_suite
from harness.reports import write_report
from harness.reports.progress import RunProgress, history_durations
from harness.reports.terminal import render as render_tables
from harness.results.history import load_history
from harness.results.store import default_path
from harness.runners import register_runner
from harness.session import HarnessSession  # opens the store: only when a case runs
from harness.stages import stages
from harness.vocab import DEVICE_FAMILIES, OTHER_MARKERS, SCENARIOS, STAGES


def markers() -> dict[str, str]:
    """Every marker: device families and stages from the vocabulary, plus any plugin stage's."""
    out = {d.name: d.marker_help for d in DEVICE_FAMILIES}
    out.update(STAGES)
    out.update({n: s.marker_help or f"stage {n}" for n, s in stages().items() if n not in out})
    out.update({k: v for k, v in OTHER_MARKERS.items() if k not in out})
    return out


_SESSION_KEY = pytest.StashKey["object"]()
_BASELINES_KEY = pytest.StashKey["object"]()  # loaded once at session start
_PROGRESS_KEY = pytest.StashKey["object"]()


def pytest_addoption(parser):
    g = parser.getgroup("harness", "model benchmark harness")
    g.addoption("--harness-store", default=None,
                help="results store (SQLite file); default $HARNESS_STORE or .harness/results.sqlite")
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
    g.addoption("--harness-scenario", default=None, choices=SCENARIOS,
                help="run throughput cases under this MLPerf LoadGen scenario (overrides the suites' scenario:)")


def pytest_addhooks(pluginmanager):
    pluginmanager.add_hookspecs(hookspec)


def pytest_configure(config):
    for name, text in markers().items():
        config.addinivalue_line("markers", f"{name}: {text}")


def _baselines_path(config) -> Path | None:
    return locate_baselines(config.getoption("--harness-baselines"), config.rootpath)


def pytest_sessionstart(session):
    # conftest.py files are loaded by now: their runners join the registry
    # before any suite is collected (and validated against it)
    for classes in session.config.hook.pytest_harness_runner_classes():
        for cls in classes or ():
            register_runner(cls.name)(cls)
    # A broken baselines file stops the run before anything is measured,
    # with the file and the fix, instead of failing every case one by one.
    path = _baselines_path(session.config)
    if path is not None:
        try:
            session.config.stash[_BASELINES_KEY] = load_baselines(path)
        except UserError as exc:
            raise pytest.UsageError(str(exc)) from None


def pytest_collect_file(file_path: Path, parent):
    if file_path.name == "suite.yaml":
        return SuiteFile.from_parent(parent, path=file_path)
    return None


class SuiteFile(pytest.File):
    def collect(self):
        suite = read_suite(self.path)
        validate_suite(suite)
        for case in build_plan(suite):
            item = CaseItem.from_parent(self, name=case.name, case=case)
            for m in case.markers:
                item.add_marker(m)
            yield item

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, UserError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class CaseFailed(Exception):
    pass


class CaseItem(pytest.Item):
    def __init__(self, *, case: Case, **kw):
        super().__init__(**kw)
        self.case = case

    def runtest(self):
        session = _session(self.config)
        progress = self.config.stash.get(_PROGRESS_KEY, None)
        if progress is not None:
            progress.start(self.case.suite.model, self.case.name)
        res = session.execute(self.case)
        if progress is not None:
            progress.finish(res)
        self.user_properties.append(("harness_result", res.to_dict()))
        if res.status == "skipped":
            # reported at the suite file, not at this line of the plugin
            raise pytest.skip.Exception(res.reason, _use_item_location=True)
        if res.status in ("failed", "error"):
            raise CaseFailed(f"[{res.status}] {res.reason}")

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, (CaseFailed, UserError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, f"{self.case.suite.model}::{self.case.name}"


def _session(config):
    s = config.stash.get(_SESSION_KEY, None)
    if s is None:
        baselines = _baselines_path(config)
        extra: dict = {}
        for part in config.hook.pytest_harness_env_extra(config=config):
            extra.update(part or {})
        s = HarnessSession(
            store=config.getoption("--harness-store"),
            cache=config.getoption("--harness-cache"),
            baselines=baselines,
            baselines_file=config.stash.get(_BASELINES_KEY, None),
            timing_override={"warmup": config.getoption("--harness-warmup"),
                             "min_iterations": config.getoption("--harness-min-iterations"),
                             "min_duration_s": config.getoption("--harness-min-duration")},
            argv=list(config.invocation_params.args),
            env_extra=extra or None,
            scenario=config.getoption("--harness-scenario"),
        )
        config.stash[_SESSION_KEY] = s
    return s


def pytest_collection_finish(session):
    config = session.config
    if not config.getoption("--harness-progress") or config.getoption("collectonly"):
        return
    cases = [(i.case.suite.model, i.case.name, i.case.stage) for i in session.items if isinstance(i, CaseItem)]
    if not cases:
        return
    path = Path(config.getoption("--harness-store") or default_path())
    try:
        history = history_durations(load_history([path]).results) if path.is_file() else {}
    except UserError:
        history = {}  # a store the run itself will refuse, with its message, when it opens it
    # a private copy of stdout: pytest's capture during a case does not reach it
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
    config.stash[_PROGRESS_KEY] = RunProgress(cases, history, terminal=out.isatty(), out=out)


@pytest.hookimpl(tryfirst=True)
def pytest_report_teststatus(report, config):
    # with --harness-progress the progress line replaces pytest's dots
    if config.stash.get(_PROGRESS_KEY, None) is None:
        return None
    outcome = report.outcome
    if report.when in ("collect", "setup", "teardown"):
        if outcome == "passed":
            return "", "", ""  # counted at the call, as pytest does
        if outcome == "failed":
            outcome = "error"
    return outcome, "", ""


def pytest_sessionfinish(session, exitstatus):
    progress = session.config.stash.get(_PROGRESS_KEY, None)
    if progress is not None:
        progress.close()
    s = session.config.stash.get(_SESSION_KEY, None)
    if s is None:
        return
    s.finish(interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)
    out = session.config.getoption("--harness-report")
    if out:
        write_report(s.store.path, out, baselines=s.baselines_path)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    s = config.stash.get(_SESSION_KEY, None)
    if s is None:
        return
    tr = terminalreporter
    tr.write_sep("-", "harness")
    tr.write_line(f"run {s.run_id}: " + ", ".join(f"{v} {k}" for k, v in s.status.items()))
    # throughput: median +- the 95% interval over repetitions, contended / imprecise marked
    tr.write(render_tables(s.results, terminal=tr.hasmarkup, width=tr._tw.fullwidth if tr.hasmarkup else 100))
    tr.write_line(f"results: {os.path.abspath(s.store.path)}")
    out = config.getoption("--harness-report")
    if out:
        tr.write_line(f"report:  {os.path.abspath(out)}")
