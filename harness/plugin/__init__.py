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
from harness.reports.progress import RunProgress, history_durations
from harness.reports.terminal import render as render_tables
from harness.results import db
from harness.results.history import load_history
from harness.results.store import Store, StoreUnavailable, new_run_id, redact
from harness.runners import devices, register_runner
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
_PIN_KEY = pytest.StashKey["dict"]()  # pytest-xdist worker: {family: device index} it was given
_RUN_KEY = pytest.StashKey["dict"]()  # pytest-xdist controller: the run its workers share
_PROGRESS_KEY = pytest.StashKey["object"]()


def pytest_addoption(parser):
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
    g.addoption("--harness-scenario", default=None, choices=SCENARIOS,
                help="run throughput cases under this MLPerf LoadGen scenario (overrides the suites' scenario:)")


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
    if _is_xdist_controller(config):
        config.stash[_RUN_KEY] = {"run_id": new_run_id(), "failed_nodes": []}
    elif hasattr(config, "workerinput"):
        # each xdist worker gets its own device now, before any framework starts
        config.stash[_PIN_KEY] = devices.pin_worker(_worker(config)[1], families=_selected_families(config))


# -- pytest-xdist: one run, one device per worker ------------------------------
def _is_xdist_controller(config) -> bool:
    return not hasattr(config, "workerinput") and getattr(config.option, "dist", "no") != "no" \
        and bool(getattr(config.option, "numprocesses", None))


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
    fams = _selected_families(config)
    n = devices.device_count(fams) if fams else 0
    return n or None


def _selected_families(config) -> list[str]:
    """The accelerator families the -m expression names."""
    words = (config.getoption("markexpr", "") or "").replace("(", " ").replace(")", " ").split()
    return [d.name for d in DEVICE_FAMILIES if d.detector != "host" and d.name in words]


def _worker(config) -> tuple[str | None, int, int]:
    """(shared run id, worker number, worker count); (None, 0, 1) without xdist."""
    wi = getattr(config, "workerinput", None)
    if not wi:
        return None, 0, 1
    return wi.get("harness_run_id"), int(str(wi["workerid"]).lstrip("gw") or 0), int(wi.get("workercount", 1))


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
    # A database store is checked before anything is measured: an unreachable
    # server or refused credentials stop the run with no run recorded.
    spec = _store_spec(session.config)
    if db.is_url(spec) and not hasattr(session.config, "workerinput"):
        try:
            Store(spec).close()
        except UserError as exc:
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
        progress = self.config.stash.get(_PROGRESS_KEY, None)
        if progress is not None:
            progress.start(self.case.suite.model, self.case.name)
        try:
            res = session.execute(self.case)
        except StoreUnavailable as exc:
            # stop here: the cases stored so far stay, the run ends interrupted
            self.session.shouldstop = f"harness: results database lost; run {session.run_id} interrupted"
            raise CaseFailed(f"[store lost] {exc}") from None
        if progress is not None:
            progress.finish(res)
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
            run_id, _, workers = _worker(config)
            s = HarnessSession(
                run_id=run_id, workers=workers, pinned=config.stash.get(_PIN_KEY, None),
                store=config.getoption("--harness-store"),
                cache=config.getoption("--harness-cache"),
                baselines=baselines,
                baselines_file=config.stash.get(_BASELINES_KEY, None),
                timing_override=timing_override(config),
                argv=list(config.invocation_params.args),
                env_extra=extra or None,
                scenario=config.getoption("--harness-scenario"),
            )
        except (UserError, OSError) as exc:
            # the store (or cache) cannot be used: one error for the run, not one per case
            text = str(exc) if isinstance(exc, UserError) else \
                f"{exc.filename}: {exc.strerror or exc}\n  fix: check --harness-store and --harness-cache"
            input_errors(config).append(text)
            pytest.exit(f"error: {text}", returncode=int(ExitCode.INPUT))
        config.stash[_SESSION_KEY] = s
    return s


def _store_spec(config) -> str:
    return config.getoption("--harness-store") or db.default_spec()  # $HARNESS_STORE, else .harness/results.sqlite


def _where(spec: str) -> str:
    return redact(spec) if db.is_url(spec) else os.path.abspath(spec)


ETA_HISTORY = 5  # earlier results per case that the progress ETA takes its median over


def pytest_collection_finish(session):
    config = session.config
    if not config.getoption("--harness-progress") or config.getoption("collectonly"):
        return
    cases = [(i.case.suite.model, i.case.name, i.case.stage) for i in session.items if isinstance(i, CaseItem)]
    if not cases:
        return
    spec = _store_spec(config)
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
    return outcome, "", ""


def pytest_sessionfinish(session, exitstatus):
    progress = session.config.stash.get(_PROGRESS_KEY, None)
    if progress is not None:
        progress.close()
    config = session.config
    interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
    if _is_xdist_controller(config):
        _finish_shared_run(config, interrupted)
        return
    s = config.stash.get(_SESSION_KEY, None)
    if s is None:
        return
    s.finish_note = s.finish(interrupted=interrupted)
    out = config.getoption("--harness-report")
    if out and not hasattr(config, "workerinput"):
        _write_report(config, s.store.spec, out, s.baselines_path)


_REPORT_FAILED_KEY = pytest.StashKey[str]()


def _write_report(config, spec, out, baselines) -> bool:
    """A side output: checked at the start; if it still fails, the results stay
    stored and the run's exit code is the cases' own."""
    try:
        write_report(spec, out, baselines=baselines)
        return True
    except UserError as exc:
        config.stash[_REPORT_FAILED_KEY] = str(exc)
        return False


def _finish_shared_run(config, interrupted: bool) -> None:
    """xdist controller: every worker is done; the shared run becomes final now.
    A worker that lost the store has already marked it interrupted: kept."""
    run = config.stash[_RUN_KEY]
    spec = _store_spec(config)
    if "://" not in spec and not os.path.isfile(spec):
        return  # no case ran: no store, no run
    try:
        store = Store(spec, create=False)
    except UserError as exc:
        run["note"] = str(exc)
        return
    try:
        status = "interrupted" if interrupted or run["failed_nodes"] else "finished"
        current = next((r["status"] for r in store.runs() if r["run_id"] == run["run_id"]), None)
        if current == "running":
            store.finish_run(run["run_id"], status)
        run["status"], run["results"] = current and (status if current == "running" else current), \
            store.count(run["run_id"])
    except UserError as exc:
        run["note"] = str(exc)
    finally:
        store.close()
    out = config.getoption("--harness-report")
    if out and run.get("status"):
        _write_report(config, spec, out, _baselines_path(config))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    tr = terminalreporter
    out = config.getoption("--harness-report")
    failed = config.stash.get(_REPORT_FAILED_KEY, None)
    if failed:
        tr.write_line(f"error: report not written (the results are stored; the exit code is the cases' own): "
                      f"{failed}", red=True)
    if _is_xdist_controller(config):
        run = config.stash[_RUN_KEY]
        tr.write_sep("-", "harness")
        workers = getattr(config.option, "numprocesses", None)
        tr.write_line(f"run {run['run_id']} ({workers} workers): {run.get('status') or 'no case stored'}, "
                      f"{run.get('results', 0)} results")
        tr.write_line(f"results: {_where(_store_spec(config))}")
        if run.get("note"):
            tr.write_line(run["note"])
        if out and run.get("status") and not failed:
            tr.write_line(f"report:  {os.path.abspath(out)}")
        return
    s = config.stash.get(_SESSION_KEY, None)
    if s is None:
        return
    tr.write_sep("-", "harness")
    tr.write_line(f"run {s.run_id}: " + ", ".join(f"{v} {k}" for k, v in s.status.items()))
    # throughput: median +- the 95% interval over repetitions, contended / imprecise marked
    tr.write(render_tables(s.results, terminal=tr.hasmarkup, width=tr._tw.fullwidth if tr.hasmarkup else 100))
    tr.write_line(f"results: {_where(s.store.spec)}")
    if getattr(s, "finish_note", None):
        tr.write_line(s.finish_note)
    elif s.lost:
        tr.write_line(f"the results database went away mid-run: run {s.run_id} marked interrupted; "
                      "the results stored before stay stored")
    if out and not failed:
        tr.write_line(f"report:  {os.path.abspath(out)}")
