"""The pytest plugin: every `suite.yaml` is collected as one item per case.

    pytest suites/se_resnext50 -m ascend310p     # one model, one device family
    pytest suites -m "cpu and throughput"        # every CPU throughput case

Loaded by the repository's root conftest.py (or `-p harness.plugin`).
"""

from __future__ import annotations

import os
import sys
from contextlib import nullcontext as _nothing
from pathlib import Path

import pytest

from harness import hookspec
from harness.config.baselines import load_baselines
from harness.config.suite import TimingSpec
from harness.errors import CaseFailed, ExitCode, UserError
from harness.fsio import check_writable
from harness.plan import Case, build_plan, read_suite, validate_suite
from harness.plugin import selection, xdist
from harness.plugin.interrupts import Interrupts
from harness.plugin.options import (
    REPORT_FAILED_KEY,
    TIMING_OPTIONS,
    add_options,
    baselines_path,
    input_errors,
    store_spec,
    timing_override,
    where,
    write_side_report,
)
from harness.plugin.xdist import (  # pytest finds the xdist hooks here, in the plugin module
    pytest_configure_node,
    pytest_testnodedown,
    pytest_xdist_auto_num_workers,
)
from harness.reports.progress import RunProgress, history_durations
from harness.reports.terminal import render as render_tables
from harness.results import db
from harness.results.history import load_history
from harness.results.masking import mask
from harness.results.store import Store
from harness.runners import register_runner
from harness.session import HarnessSession, unmeasured  # opens the store: only when a case runs
from harness.stages import stages
from harness.vocab import DEVICE_FAMILIES, OTHER_MARKERS, STAGES


def markers() -> dict[str, str]:
    """Every marker: device families and stages from the vocabulary, plus any plugin stage's."""
    out = {d.name: d.marker_help for d in DEVICE_FAMILIES}
    out.update(STAGES)
    out.update({n: s.marker_help or f"stage {n}" for n, s in stages().items() if n not in out})
    out.update({k: v for k, v in OTHER_MARKERS.items() if k not in out})
    return out


_SESSION_KEY = pytest.StashKey["object"]()
_BASELINES_KEY = pytest.StashKey["object"]()  # loaded once at session start
_NOT_STORED_KEY = pytest.StashKey[list]()  # cases measured, not stored (kept in the journal): exit NOT_STORED
_CONFIG: list = []  # the session's config: pytest_runtest_logreport is given only the report


def not_stored(config) -> list[str]:
    return config.stash.setdefault(_NOT_STORED_KEY, [])


def pytest_runtest_logreport(report):
    note = dict(report.user_properties).get("harness_not_stored")  # this process's cases and xdist workers'
    if note and _CONFIG and report.when == "call":
        not_stored(_CONFIG[0]).append(note)
_PROGRESS_KEY = pytest.StashKey["object"]()
_INTERRUPTS_KEY = pytest.StashKey[Interrupts]()


def pytest_addoption(parser):
    add_options(parser)


def pytest_addhooks(pluginmanager):
    pluginmanager.add_hookspecs(hookspec)


def pytest_configure(config):
    _CONFIG[:] = [config]
    for name, text in markers().items():
        config.addinivalue_line("markers", f"{name}: {text}")
    try:  # bad options stop the run before anything is measured
        TimingSpec().with_overrides(timing_override(config), names=TIMING_OPTIONS)
        if config.getoption("--harness-report"):
            check_writable(config.getoption("--harness-report"), what="report")
    except UserError as exc:
        raise pytest.UsageError(str(exc)) from None
    xdist.configure(config)
    # SIGINT and SIGTERM end the run as a KeyboardInterrupt, whatever a framework installs
    config.stash[_INTERRUPTS_KEY] = interrupts = Interrupts()
    interrupts.hold()


def pytest_unconfigure(config):
    interrupts = config.stash.get(_INTERRUPTS_KEY, None)
    if interrupts is not None:
        interrupts.release()


@pytest.hookimpl(wrapper=True)
def pytest_cmdline_main(config):
    """The exit code on the harness's table (harness.errors.ExitCode), for `pytest` as for `harness run`."""
    try:
        rc = yield
    except pytest.UsageError as exc:  # raised by a hook (a bad option value, an unusable store): pytest's 4
        for msg in exc.args:
            print(f"ERROR: {msg}\n", file=sys.stderr)
        return int(ExitCode.INPUT) if input_errors(config) else int(ExitCode.USAGE)
    return selection.exit_code(config, rc)


def pytest_sessionstart(session):
    # conftest.py files are loaded by now: their runners join the registry
    # before any suite is collected (and validated against it)
    for classes in session.config.hook.pytest_harness_runner_classes():
        for cls in classes or ():
            register_runner(cls.name)(cls)
    # A broken baselines file stops the run before anything is measured,
    # with the file and the fix, instead of failing every case one by one.
    path = baselines_path(session.config)
    if path is not None:
        try:
            session.config.stash[_BASELINES_KEY] = load_baselines(path)
        except UserError as exc:
            input_errors(session.config).append(str(exc))
            raise pytest.UsageError(str(exc)) from None
    # A database store is checked before anything is measured: an unreachable
    # server or refused credentials stop the run with no run recorded.
    spec = store_spec(session.config)
    if db.is_url(spec) and not hasattr(session.config, "workerinput"):
        try:
            Store(spec).close()
        except UserError as exc:
            input_errors(session.config).append(str(exc))  # bad input (3), as for `harness run`
            raise pytest.UsageError(str(exc)) from None


def pytest_collect_file(file_path: Path, parent):
    if file_path.name == "suite.yaml":
        return SuiteFile.from_parent(parent, path=file_path)
    return None


class SuiteFile(pytest.File):
    def collect(self):
        try:
            suite = read_suite(self.path)
            validate_suite(suite)
        except UserError as exc:
            input_errors(self.config).append(str(exc))
            raise
        selection.saw_suite(self.config)
        for case in build_plan(suite):
            item = CaseItem.from_parent(self, name=case.name, case=case)
            for m in case.markers:
                item.add_marker(m)
            yield item

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, UserError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class CaseItem(pytest.Item):
    def __init__(self, *, case: Case, **kw):
        super().__init__(**kw)
        self.case = case

    def runtest(self):
        session = _session(self.config)
        progress = self.config.stash.get(_PROGRESS_KEY, None)
        if progress is not None:
            progress.start(self.case.suite.model, self.case.name)
        try:
            res = session.execute(self.case)  # a result the store cannot take is kept in the journal
        finally:  # a framework (MindSpore) may have taken SIGINT during the case: ours again
            interrupts = self.config.stash.get(_INTERRUPTS_KEY, None)
            if interrupts is not None:
                interrupts.reclaim()
        if interrupts is not None:
            interrupts.check()  # a signal whose KeyboardInterrupt a framework swallowed: the run stops here
        if progress is not None:
            progress.finish(res)
        self.user_properties.append(("harness_result", res.to_dict()))
        kept = session.not_stored(res)
        if kept:
            self.user_properties.append(("harness_not_stored", f"{self.case.suite.model} {self.case.name}: {kept}"))
            raise CaseFailed(f"[not stored] {kept}")
        if res.status == "error" and session.input_error(res):
            input_errors(self.config).append(f"{self.case.suite.model} {self.case.name}: {res.reason}")
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
        baselines = baselines_path(config)
        extra: dict = {}
        for part in config.hook.pytest_harness_env_extra(config=config):
            extra.update(part or {})
        try:
            run_id, _, workers = xdist.worker(config)
            s = HarnessSession(
                run_id=run_id, workers=workers, pinned=config.stash.get(xdist.PIN_KEY, None),
                store=config.getoption("--harness-store"),
                cache=config.getoption("--harness-cache"),
                baselines=baselines,
                baselines_file=config.stash.get(_BASELINES_KEY, None),
                timing_override=timing_override(config),
                argv=list(config.invocation_params.args),
                env_extra=extra or None,
                scenario=config.getoption("--harness-scenario"), notify=_notifier(config),
            )
        except (UserError, OSError) as exc:
            # the store (or cache) cannot be used: one error for the run, not one per case
            text = str(exc) if isinstance(exc, UserError) else \
                f"{exc.filename}: {exc.strerror or exc}\n  fix: check --harness-store and --harness-cache"
            text = mask(text)
            input_errors(config).append(text)
            pytest.exit(f"error: {text}", returncode=int(ExitCode.INPUT))
        config.stash[_SESSION_KEY] = s
    return s


def _notifier(config):  # a line on the terminal while a case runs (pytest captures the case's output)
    capman = config.pluginmanager.getplugin("capturemanager")

    def notify(line: str) -> None:
        with capman.global_and_fixture_disabled() if capman else _nothing():
            print(f"\n{line}", file=sys.stderr, flush=True)
    return notify


ETA_HISTORY = 5  # earlier results per case that the progress ETA takes its median over


def pytest_collection_finish(session):
    config = session.config
    if not config.getoption("--harness-progress") or config.getoption("collectonly") \
            or hasattr(config, "workerinput"):  # an xdist worker's stdout is not the terminal
        return
    cases = [(i.case.suite.model, i.case.name, i.case.stage) for i in session.items if isinstance(i, CaseItem)]
    if not cases:
        return
    spec = store_spec(config)
    try:
        # the newest few results of each case are enough for a median, and a year of
        # history is not parsed at every start (1.1 s for 65,700 results; 0.3 s this way)
        history = (history_durations(load_history([spec], gate_depth=ETA_HISTORY).results)
                   if db.is_url(spec) or Path(spec).is_file() else {})
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
    return outcome, "", outcome.upper()  # no dot; the word for -v and the short summary (-rs)


def pytest_sessionfinish(session, exitstatus):
    progress = session.config.stash.get(_PROGRESS_KEY, None)
    if progress is not None:
        progress.close()
    config = session.config
    interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
    if xdist.is_controller(config):
        xdist.finish_shared_run(config, interrupted)
        return
    s = config.stash.get(_SESSION_KEY, None)
    if s is None:
        return
    s.finish_note = s.finish(interrupted=interrupted)
    s.unmeasured, unmet = unmeasured(s.results, config.getoption("--harness-require"))
    if unmet and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    out = config.getoption("--harness-report")
    if out and not hasattr(config, "workerinput"):
        write_side_report(config, s.store.spec, out, s.baselines_path)


def pytest_collection_modifyitems(session, config, items):
    selection.deselect(config, items, lambda item: item.case if isinstance(item, CaseItem) else None)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    tr = terminalreporter
    out = config.getoption("--harness-report")
    failed = config.stash.get(REPORT_FAILED_KEY, None)
    if failed:
        tr.write_line(f"error: report not written (the results are stored; the exit code is the cases' own): "
                      f"{failed}", red=True)
    if selection.selection(config)["suites"]:  # a run over suites: say what is wrong with its selection
        if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
            for line in selection.nothing_selected_lines(config, list(markers())):
                tr.write_line(line, red=True)
        else:
            for note in selection.selection_notes(config, list(markers())):
                tr.write_line(f"warning: {note}", yellow=True)
    if xdist.is_controller(config):
        tr.write_sep("-", "harness")
        for line in xdist.summary_lines(config, bool(failed)):
            tr.write_line(line)
        return
    s = config.stash.get(_SESSION_KEY, None)
    if s is None:
        return
    tr.write_sep("-", "harness")
    tr.write_line(f"run {s.run_id}: " + ", ".join(f"{v} {k}" for k, v in s.status.items()))
    # throughput: median +- the 95% interval over repetitions, contended / imprecise marked
    tr.write(render_tables(s.results, terminal=tr.hasmarkup, width=tr._tw.fullwidth if tr.hasmarkup else 100))
    for line in getattr(s, "unmeasured", ()):
        tr.write_line(line, yellow=True)
    tr.write_line(f"results: {where(s.store.spec)}")
    if exitstatus == pytest.ExitCode.INTERRUPTED and not getattr(s, "finish_note", None):
        n = len(s.results)
        kept = f"the {n} result{'' if n == 1 else 's'} above stay stored" if n else "before any case finished"
        tr.write_line(f"run {s.run_id} interrupted: {kept}; an interrupted run is never taken as a baseline")
    for line in s.summary_lines() + [getattr(s, "finish_note", None) or ""]:
        if line:
            tr.write_line(line, red=line.startswith("NOT STORED"))
    if out and not failed:
        tr.write_line(f"report:  {os.path.abspath(out)}")
