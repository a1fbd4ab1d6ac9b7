"""Command line: `harness run | validate` (this module), report | compare | gate | readme | export
(:mod:`harness.cli.reports`), import | bundle | claims | devices (:mod:`harness.cli.results`) and
show (:mod:`harness.cli.show`).

Exit codes: :class:`harness.errors.ExitCode`, the one table every command and
`pytest` with the plugin use (the README's "Exit codes"). `harness run` is pytest
with the plugin: its own options become the plugin's (``--store`` ->
``--harness-store``), every other argument goes to pytest unchanged, and the plugin
maps pytest's outcome onto the table (interrupted -> 1, usage -> 2, nothing
selected -> 5). Bad input (3) wins over failed cases (1): the run's verdict is
incomplete until the input is fixed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pytest

from harness import __version__, plugin
from harness.cli.replay import register as register_replay
from harness.cli.reports import register as register_reports
from harness.cli.results import register as register_results
from harness.cli.show import register as register_show
from harness.config.baselines import load_baselines, locate_baselines
from harness.config.suite import TimingSpec, find_suites
from harness.errors import ExitCode, UserError
from harness.fsio import check_writable
from harness.plan import build_plan, read_suite, validate_suite
from harness.plugin.interrupts import Interrupts
from harness.results.db import ENV_VAR, is_url
from harness.results.masking import mask
from harness.results.store import Store
from harness.vocab import SCENARIOS

TIMING_FLAGS = {"warmup": "--warmup", "min_iterations": "--min-iterations", "min_duration_s": "--min-duration"}
# `harness run` option -> the plugin's pytest option
PLUGIN_OPTIONS = {"store": "--harness-store", "cache": "--harness-cache", "baselines": "--harness-baselines",
                  "report": "--harness-report", "warmup": "--harness-warmup",
                  "min_iterations": "--harness-min-iterations", "min_duration": "--harness-min-duration",
                  "scenario": "--harness-scenario", "model": "--harness-model", "batch_size": "--harness-batch-size",
                  "require": "--harness-require"}
XDIST_OPTIONS = ("-n", "--numprocesses", "--dist", "--maxprocesses")


class _RunWatch:
    """`harness run`'s own hooks in the pytest it starts: the default path and quietness,
    suites checked before anything runs, and the config kept to read its input errors."""

    def __init__(self) -> None:
        self.config = None
        self.unknown: list[str] = []
        self.interrupted = False

    def pytest_keyboard_interrupt(self, excinfo):
        self.interrupted = True

    @pytest.hookimpl(tryfirst=True)
    def pytest_load_initial_conftests(self, early_config, parser, args):
        # pytest's own parser, with every installed plugin's options, reads the arguments:
        # `-n 2` (pytest-xdist) takes a value, `--lf` does not, so no value is taken for a path
        self.config = early_config
        ns, unknown = parser.parse_known_and_unknown_args(args)
        self.unknown = [u for u in unknown if u.startswith("-")]  # a conftest.py's options are not known yet
        paths = list(ns.file_or_dir or [])
        if not paths:
            args.insert(0, "suites")
        if not ns.verbose:  # the user's -v / -q win
            args.append("-q")
        if self.unknown:
            return  # pytest reports an option it does not know; a value of it is no suite path
        try:  # every suite checked before anything runs: one error with the file and the fix
            for p in find_suites([p.split("::")[0] for p in paths] or ["suites"]):
                validate_suite(read_suite(p))
        except UserError as exc:
            plugin.input_errors(early_config).append(str(exc))
            raise pytest.UsageError(str(exc)) from None

    def pytest_configure(self, config):
        self.config = config


def _cmd_run(args) -> int:
    try:  # the same rules as a suite's timing: section
        TimingSpec().with_overrides({"warmup": args.warmup, "min_iterations": args.min_iterations,
                                     "min_duration_s": args.min_duration}, names=TIMING_FLAGS)
    except UserError as exc:
        print(f"harness run: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    if args.report:
        check_writable(args.report, what="report")  # before anything runs
    spec = args.store or os.environ.get(ENV_VAR)
    if spec and is_url(spec):
        # an unreachable server or refused credentials: exit 3 before anything runs or is recorded
        Store(spec).close()
    # the plugin goes in as the module already imported (`-p harness.plugin` then finds it loaded, and no
    # warning that it cannot be rewritten); `-p` also loads it in pytest-xdist's workers, fresh processes
    argv = [*args.pytest_args, "-p", "harness.plugin", "--no-header", "--harness-progress",
            "-o", "console_output_style=classic"]
    if args.skip_reasons:
        argv.append("-rs")
    if args.markers:
        argv += ["-m", args.markers]
    if args.keyword:
        argv += ["-k", args.keyword]
    for name, opt in PLUGIN_OPTIONS.items():
        val = getattr(args, name)
        for v in (val if isinstance(val, list) else [val] if val is not None else []):
            argv += [opt, str(v)]
    watch = _RunWatch()
    rc = pytest.main(argv, plugins=[plugin, watch])  # the plugin puts it on the harness's table
    args.interrupted = watch.interrupted
    kept = plugin.not_stored(watch.config) if watch.config is not None else []
    if kept:  # nothing measured is lost: it waits in the journal for the store (7 wins over 3 and 1)
        more = f" (and {len(kept) - 1} more above)" if len(kept) > 1 else ""
        print(f"harness run: {len(kept)} result(s) measured but not stored, exit {ExitCode.NOT_STORED:d}: "
              f"{kept[0]}{more}; the run is incomplete until `harness replay` (or the next run) stores them",
              file=sys.stderr)
        return ExitCode.NOT_STORED
    errors = plugin.input_errors(watch.config) if watch.config is not None else []
    if errors:
        more = f" (and {len(errors) - 1} more above)" if len(errors) > 1 else ""
        print(f"harness run: bad input, exit {ExitCode.INPUT:d}: {errors[0].splitlines()[0]}{more}", file=sys.stderr)
        return ExitCode.INPUT
    if rc == pytest.ExitCode.USAGE_ERROR:  # pytest's own, before the plugin could map it (an unknown option)
        xdist = [u for u in watch.unknown if u.split("=")[0] in XDIST_OPTIONS]
        if xdist:
            print(f"harness run: {xdist[0]} is pytest-xdist's option, and pytest-xdist is not loaded (not "
                  "installed, or -p no:xdist): pip install 'modelzoo-harness[team]'", file=sys.stderr)
        return ExitCode.USAGE
    try:
        return ExitCode(rc)
    except ValueError:
        return rc


def _cmd_validate(args) -> int:
    for p in find_suites(args.paths or ["suites"]):
        suite = read_suite(p)
        validate_suite(suite)
        print(f"{p}: {suite.model}, {len(suite.targets)} targets, {len(build_plan(suite))} cases")
    path = locate_baselines(args.baselines)
    if path is not None:
        bf = load_baselines(path)
        print(f"{path}: {len(bf.baselines)} baselines, {len(bf.claims)} claims")
    return ExitCode.OK


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="harness", description="Executable model-zoo numbers: export, check, "
                                 "benchmark and report image-classification models from declarative suites.")
    ap.add_argument("--version", action="version", version=f"harness {__version__} ({Path(__file__).parents[1]})",
                    help="print the version and where this harness is installed, and exit")
    sub = ap.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run", help="run suites (pytest with the harness plugin; pytest's options pass through)",
        usage="harness run [PATH ...] [options] [pytest options]", allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run suites: PATH is a suite folder or file, or a pytest node id (default: suites).\n"
                    "Every argument not listed below goes to pytest unchanged, e.g. -n 2 (pytest-xdist), "
                    "--collect-only,\n-x, --lf, -q, -v, -p no:cacheprovider; so do the arguments after --.\n\n"
                    "examples:\n  harness run suites -m cpu --report report.html\n"
                    "  harness run suites --model xception --batch-size 1 -m cpu --collect-only\n"
                    "  harness run suites -m cpu -n 2              # two pytest-xdist workers, one run",
        epilog="exit codes: 0 passed (skips allowed), 1 a case failed or the run was interrupted (Ctrl-C, SIGTERM), "
               "2 usage, 3 bad input, 5 nothing selected, 7 results kept in the journal, not the store. "
               "The README's \"Exit codes\" has the table.")
    run.add_argument("-m", dest="markers", default=None, metavar="MARKEXPR",
                     help="pytest marker expression: cpu, gpu, ascend310p, throughput, 'cpu and parity' ...")
    run.add_argument("-k", dest="keyword", default=None, metavar="EXPR",
                     help="pytest keyword expression over case names, e.g. 'bs8' or 'throughput and not bs1'")
    run.add_argument("--model", action="append", metavar="NAME",
                     help="only this model's cases (the suite's model: key, exactly); repeat for several")
    run.add_argument("--batch-size", action="append", type=int, metavar="N",
                     help="only cases of this batch size (exactly: 1 is not 16); repeat for several")
    run.add_argument("--store", help="results store: an SQLite file or postgresql://USER@HOST:PORT/DB "
                                     "(default $HARNESS_STORE or .harness/results.sqlite)")
    run.add_argument("--cache", help="artifact cache (default $HARNESS_CACHE or .harness/cache)")
    run.add_argument("--baselines", help="baselines file (default baselines.yaml if present)")
    run.add_argument("--report", metavar="FILE", help="write the HTML report here at the end")
    run.add_argument("--warmup", type=int, help="override every suite's warmup iterations")
    run.add_argument("--min-iterations", type=int, help="override every suite's minimum timed iterations")
    run.add_argument("--min-duration", type=float, help="override every suite's minimum timed seconds")
    run.add_argument("--scenario", choices=SCENARIOS,
                     help="throughput under MLPerf LoadGen: offline (throughput), singlestream (p90 latency), "
                          "server (highest QPS meeting the latency bound); harness: the harness's own loop")
    run.add_argument("--require", action="append", default=[], metavar="FAMILY",
                     help="exit 1 if the run measured nothing on this device family (gpu, cpu, ascend310p...; "
                          "repeatable): for nightly jobs that must measure")
    run.add_argument("--skip-reasons", action="store_true",
                     help="list the skipped cases with their reasons at the end (pytest's -rs)")
    run.set_defaults(func=_cmd_run)

    register_reports(sub)  # report, compare, gate, readme, export
    register_results(sub)  # import, bundle, claims, devices

    register_show(sub)  # show: a stored run's tables in the terminal
    register_replay(sub)  # replay: kept (journalled) results into the store

    val = sub.add_parser("validate", help="check suites and baselines without running anything")
    val.add_argument("paths", nargs="*", help="suite folders or files (default: suites)")
    val.add_argument("--baselines", help="baselines file (default baselines.yaml if present)")
    val.set_defaults(func=_cmd_validate)
    return ap


def _exit_now(rc: int) -> None:
    """End the process without the frameworks' exit handlers. After an interrupt a framework may be
    half set up, and its handlers can crash the interpreter after everything is done (MindSpore's
    profiler hook imported a half-imported module again and the run ended 134, not 1). The results,
    the run's mark and the report are written by now; only the exit code is left to give."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(rc))


def main(argv: list[str] | None = None) -> int:
    as_program = argv is None  # the `harness` command itself, not a call from Python
    argv = list(sys.argv[1:] if argv is None else argv)
    # everything after a bare `--` goes to pytest untouched
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command != "run" and unknown:
        parser.parse_args(argv)  # the other commands take no pytest arguments: argparse's own error (exit 2)
    args.pytest_args = [*unknown, *extra]
    interrupts = Interrupts()  # SIGINT and SIGTERM: exit 1 at any stage, also before pytest starts
    interrupts.hold()
    try:
        rc = args.func(args)
        if as_program and getattr(args, "interrupted", False):
            _exit_now(rc)
        return rc
    except KeyboardInterrupt as exc:
        print(f"harness {args.command}: interrupted ({exc or 'SIGINT'}); exit {ExitCode.FAILED:d}", file=sys.stderr)
        if as_program:
            _exit_now(ExitCode.FAILED)
        return ExitCode.FAILED
    except UserError as exc:
        print(f"error: {mask(exc)}", file=sys.stderr)  # no password of any store, in any form
        return ExitCode.INPUT
    except OSError as exc:  # a file the user named could not be used: one line, no traceback
        if exc.filename is None:
            raise
        print(mask(f"error: {exc.filename}: {exc.strerror or exc}\n  fix: check the path and its permissions"),
              file=sys.stderr)
        return ExitCode.INPUT
    finally:
        interrupts.release()


if __name__ == "__main__":
    sys.exit(main())
