"""Command line: `harness run | validate` (this module), report | compare | gate | readme | export
(:mod:`harness.cli.reports`) and import | bundle | claims | devices (:mod:`harness.cli.results`).

Exit codes: :class:`harness.errors.ExitCode`, the one table every command uses.
"""

from __future__ import annotations

import argparse
import sys

import pytest

from harness.cli.reports import register as register_reports
from harness.cli.results import register as register_results
from harness.cli.show import register as register_show
from harness.config.baselines import load_baselines, locate_baselines
from harness.config.suite import find_suites
from harness.errors import ExitCode, UserError
from harness.plan import build_plan, read_suite, validate_suite
from harness.vocab import SCENARIOS


def _cmd_run(args) -> int:
    paths = args.paths or ["suites"]
    for p in find_suites(paths):  # fail fast, without a traceback, on a bad suite
        validate_suite(read_suite(p))
    argv = [*paths, "-p", "harness.plugin", "-rs" if args.verbose else "-q", "--no-header",
            "--harness-progress", "-o", "console_output_style=classic"]
    if args.markers:
        argv += ["-m", args.markers]
    for opt, val in (("--harness-store", args.store), ("--harness-cache", args.cache),
                     ("--harness-baselines", args.baselines), ("--harness-report", args.report),
                     ("--harness-warmup", args.warmup), ("--harness-min-iterations", args.min_iterations),
                     ("--harness-min-duration", args.min_duration), ("--harness-scenario", args.scenario)):
        if val is not None:
            argv += [opt, str(val)]
    argv += args.pytest_args
    rc = pytest.main(argv)
    if rc == pytest.ExitCode.NO_TESTS_COLLECTED:
        print(f"error: no case selected from {', '.join(paths)} with -m {args.markers!r}", file=sys.stderr)
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
    run.add_argument("paths", nargs="*", help="suite folders or files (default: suites)")
    run.add_argument("-m", dest="markers", default=None,
                     help="pytest marker expression: cpu, gpu, ascend310p, throughput, 'cpu and parity' ...")
    run.add_argument("--store", help="results store (default $HARNESS_STORE or .harness/results.sqlite)")
    run.add_argument("--cache", help="artifact cache (default $HARNESS_CACHE or .harness/cache)")
    run.add_argument("--baselines", help="baselines file (default baselines.yaml if present)")
    run.add_argument("--report", help="write the HTML report here at the end")
    run.add_argument("--warmup", type=int, help="override every suite's warmup iterations")
    run.add_argument("--min-iterations", type=int, help="override every suite's minimum timed iterations")
    run.add_argument("--min-duration", type=float, help="override every suite's minimum timed seconds")
    run.add_argument("--scenario", choices=SCENARIOS,
                     help="throughput under MLPerf LoadGen: offline (throughput), singlestream (p90 latency), "
                          "server (highest QPS meeting the latency bound); harness: the harness's own loop")
    run.add_argument("-v", "--verbose", action="store_true", help="list skip reasons")
    run.set_defaults(func=_cmd_run)


    register_reports(sub)  # report, compare, gate, readme, export


    register_results(sub)  # import, bundle, claims, devices

    register_show(sub)  # show: a stored run's tables in the terminal

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
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.INPUT


if __name__ == "__main__":
    sys.exit(main())
