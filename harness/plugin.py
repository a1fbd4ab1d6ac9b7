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
from harness.config.suite import TimingSpec
from harness.errors import ExitCode, UserError
from harness.fsio import check_writable
from harness.plan import Case, build_plan, read_suite, validate_suite
from harness.reports import write_report
from harness.runners import register_runner
from harness.session import HarnessSession  # opens the store: only when a case runs
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
# what went wrong with the user's input (suite, store, checkpoint, dataset ...), for
# `harness run`'s exit code (3): see input_errors()
_INPUT_ERRORS_KEY = pytest.StashKey[list]()
TIMING_OPTIONS = {"warmup": "--harness-warmup", "min_iterations": "--harness-min-iterations",
                  "min_duration_s": "--harness-min-duration"}


def input_errors(config) -> list[str]:
    """The input errors of this run so far: a suite that did not collect, a case
    that stopped on a UserError (bad checkpoint, dataset, model file, a batch
    that cannot fit), an unusable store."""
    return config.stash.setdefault(_INPUT_ERRORS_KEY, [])


def timing_override(config) -> dict:
    return {k: config.getoption(opt) for k, opt in TIMING_OPTIONS.items()}


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


def pytest_addhooks(pluginmanager):
    pluginmanager.add_hookspecs(hookspec)


def pytest_configure(config):
    for name, text in markers().items():
        config.addinivalue_line("markers", f"{name}: {text}")
    try:  # bad options stop the run before anything is measured
        TimingSpec().with_overrides(timing_override(config), names=TIMING_OPTIONS)
        if config.getoption("--harness-report"):
            check_writable(config.getoption("--harness-report"), what="report")
    except UserError as exc:
        raise pytest.UsageError(str(exc)) from None


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
            input_errors(session.config).append(str(exc))
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
        res = session.execute(self.case)
        self.user_properties.append(("harness_result", res.to_dict()))
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
        baselines = _baselines_path(config)
        extra: dict = {}
        for part in config.hook.pytest_harness_env_extra(config=config):
            extra.update(part or {})
        try:
            s = HarnessSession(
                store=config.getoption("--harness-store"),
                cache=config.getoption("--harness-cache"),
                baselines=baselines,
                baselines_file=config.stash.get(_BASELINES_KEY, None),
                timing_override=timing_override(config),
                argv=list(config.invocation_params.args),
                env_extra=extra or None,
            )
        except (UserError, OSError) as exc:
            # the store (or cache) cannot be used: one error for the run, not one per case
            text = str(exc) if isinstance(exc, UserError) else \
                f"{exc.filename}: {exc.strerror or exc}\n  fix: check --harness-store and --harness-cache"
            input_errors(config).append(text)
            pytest.exit(f"error: {text}", returncode=int(ExitCode.INPUT))
        config.stash[_SESSION_KEY] = s
    return s


def pytest_sessionfinish(session, exitstatus):
    s = session.config.stash.get(_SESSION_KEY, None)
    if s is None:
        return
    s.finish(interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)
    out = session.config.getoption("--harness-report")
    if out:
        try:  # a side output: checked at the start; if it still fails, the results stay stored and the run's
            write_report(s.store.path, out, baselines=s.baselines_path)  # exit code is the cases' own
        except UserError as exc:
            session.config.stash[_REPORT_FAILED_KEY] = str(exc)


_REPORT_FAILED_KEY = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    failed = config.stash.get(_REPORT_FAILED_KEY, None)
    if failed:
        terminalreporter.write_line(f"error: report not written (the results are stored; the exit code is the "
                                    f"cases' own): {failed}", red=True)
    s = config.stash.get(_SESSION_KEY, None)
    if s is None:
        return
    tr = terminalreporter
    tr.write_sep("-", "harness")
    tr.write_line(f"run {s.run_id}: " + ", ".join(f"{v} {k}" for k, v in s.status.items()))
    timed = [r for r in s.results if r.stage == "throughput" and r.status in ("passed", "failed")]
    if timed:  # value +- the 95% interval over repetitions; contended ones say so
        tr.write_line("throughput (median ± 95% CI over repetitions):")
        for r in timed:
            tr.write_line(f"  {r.model} {r.case}: {r.reason}")
    tr.write_line(f"results: {os.path.abspath(s.store.path)}")
    out = config.getoption("--harness-report")
    if out and not failed:
        tr.write_line(f"report:  {os.path.abspath(out)}")
