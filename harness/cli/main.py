"""Command line: `harness run | validate` (this module), report | compare | gate | readme | export
(:mod:`harness.cli.reports`) and import | bundle | claims | devices (:mod:`harness.cli.results`).

Exit codes: :class:`harness.errors.ExitCode`, the one table every command uses.
`harness run`: 0 every selected case passed or skipped; 1 a case failed or
errored (or the run was interrupted); 2 a bad command line (including timing
overrides the suite's rules refuse) or nothing selected; 3 bad input: a suite
that does not load, a baselines file, the store, an output path, or a case that
stopped on the user's input (checkpoint, model file, dataset, label file, a
batch that cannot fit in memory). 3 wins over 1: the run's verdict is
incomplete until the input is fixed.
"""

from __future__ import annotations

import argparse
import os
import sys

import pytest

from harness import plugin
from harness.cli.reports import register as register_reports
from harness.cli.replay import register as register_replay
from harness.cli.results import register as register_results
from harness.cli.show import register as register_show
from harness.config.baselines import load_baselines, locate_baselines
from harness.config.suite import TimingSpec, find_suites
from harness.errors import ExitCode, UserError
from harness.fsio import check_writable
from harness.plan import build_plan, read_suite, validate_suite
from harness.results.db import ENV_VAR, is_url
from harness.results.masking import mask
from harness.results.store import Store
from harness.vocab import SCENARIOS

TIMING_FLAGS = {"warmup": "--warmup", "min_iterations": "--min-iterations", "min_duration_s": "--min-duration"}


class _RunWatch:
    """Keeps the pytest config of `harness run`, to read its input errors afterwards."""

    config = None

    def pytest_configure(self, config):
        self.config = config


def _cmd_run(args) -> int:
    paths = args.paths or ["suites"]
    try:  # the same rules as a suite's timing: section
        TimingSpec().with_overrides({"warmup": args.warmup, "min_iterations": args.min_iterations,
                                     "min_duration_s": args.min_duration}, names=TIMING_FLAGS)
    except UserError as exc:
        print(f"harness run: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    if args.report:
        check_writable(args.report, what="report")  # before anything runs
    # a path may name one case, as pytest's node ids do: suites/m/suite.yaml::throughput[ort-bs8]
    for p in find_suites([x.split("::", 1)[0] for x in paths]):  # fail fast, without a traceback, on a bad suite
        validate_suite(read_suite(p))
    spec = args.store or os.environ.get(ENV_VAR)
    if spec and is_url(spec):
        # an unreachable server or refused credentials: exit 3 before anything runs or is recorded
        Store(spec).close()
    # the plugin goes in as the module already imported (as `-p harness.plugin` would, minus a warning)
    argv = [*paths, "-rs" if args.verbose else "-q", "--no-header", "--harness-progress",
            "-o", "console_output_style=classic"]
    if args.markers:
        argv += ["-m", args.markers]
    if args.keyword:
        argv += ["-k", args.keyword]
    if args.exitfirst:
        argv += ["-x"]
    for opt, val in (("--harness-store", args.store), ("--harness-cache", args.cache),
                     ("--harness-baselines", args.baselines), ("--harness-report", args.report),
                     ("--harness-warmup", args.warmup), ("--harness-min-iterations", args.min_iterations),
                     ("--harness-min-duration", args.min_duration), ("--harness-scenario", args.scenario)):
        if val is not None:
            argv += [opt, str(val)]
    argv += [f"--harness-require={fam}" for fam in args.require]
    argv += args.pytest_args
    watch = _RunWatch()
    rc = pytest.main(argv, plugins=[plugin, watch])
    kept = plugin.not_stored(watch.config) if watch.config is not None else []
    if kept:  # nothing measured is lost: it waits in the journal for the store
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
    if rc == pytest.ExitCode.NO_TESTS_COLLECTED:
        sel = " and ".join(f"{o} {v!r}" for o, v in (("-m", args.markers), ("-k", args.keyword)) if v)
        print(f"error: no case selected from {', '.join(paths)}{' with ' + sel if sel else ''}", file=sys.stderr)
        return ExitCode.USAGE
    if rc == pytest.ExitCode.USAGE_ERROR:
        return ExitCode.USAGE
    return ExitCode.OK if rc == 0 else ExitCode.FAILED


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
    sub = ap.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run suites (a wrapper around pytest with the harness plugin)",
                         description="Run suites. Example: harness run suites -m cpu --report report.html. "
                                     "Arguments after -- go to pytest as they are (e.g. -- -x -k bs8).")
    run.add_argument("paths", nargs="*", help="suite folders or files, or one case of a suite as a pytest node id "
                                              "(suites/m/suite.yaml::throughput[ort-bs8]); default: suites")
    run.add_argument("-m", dest="markers", default=None,
                     help="pytest marker expression: cpu, gpu, ascend310p, throughput, 'cpu and parity' ...")
    run.add_argument("-k", dest="keyword", default=None,
                     help="pytest keyword expression over case names, e.g. 'bs8' or 'throughput and not bs1'")
    run.add_argument("-x", "--exitfirst", action="store_true", help="stop at the first failed case")
    run.add_argument("--store", help="results store: an SQLite file or postgresql://USER@HOST:PORT/DB "
                                     "(default $HARNESS_STORE or .harness/results.sqlite)")
    run.add_argument("--cache", help="artifact cache (default $HARNESS_CACHE or .harness/cache)")
    run.add_argument("--baselines", help="baselines file (default baselines.yaml if present)")
    run.add_argument("--report", help="write the HTML report here at the end")
    run.add_argument("--warmup", type=int, help="override every suite's warmup iterations")
    run.add_argument("--min-iterations", type=int, help="override every suite's minimum timed iterations")
    run.add_argument("--min-duration", type=float, help="override every suite's minimum timed seconds")
    run.add_argument("--scenario", choices=SCENARIOS,
                     help="throughput under MLPerf LoadGen: offline (throughput), singlestream (p90 latency), "
                          "server (highest QPS meeting the latency bound); harness: the harness's own loop")
    run.add_argument("--require", action="append", default=[], metavar="FAMILY",
                     help="exit 1 if the run measured nothing on this device family (gpu, cpu, ascend310p...; "
                          "repeatable): for nightly jobs that must measure")
    run.add_argument("-v", "--verbose", action="store_true", help="list skip reasons")
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # everything after a bare `--` goes to pytest untouched
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    args = build_parser().parse_args(argv)
    args.pytest_args = extra
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {mask(exc)}", file=sys.stderr)  # no password of any store, in any form
        return ExitCode.INPUT
    except OSError as exc:  # a file the user named could not be used: one line, no traceback
        if exc.filename is None:
            raise
        print(mask(f"error: {exc.filename}: {exc.strerror or exc}\n  fix: check the path and its permissions"),
              file=sys.stderr)
        return ExitCode.INPUT


if __name__ == "__main__":
    sys.exit(main())
