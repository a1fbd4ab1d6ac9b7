"""Command line: `harness run | validate`, plus report | compare | gate | readme | export
(harness/reports/cli.py) and import | bundle | claims | devices (harness/crossdevice_cli.py).

Exit codes: 0 all passed (skips allowed), 1 some case failed or errored (gate:
a regression or a failed claim), 2 usage error, 3 a problem with the user's
input (bad suite, missing or foreign file), 4 the gate compared nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import UserError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INPUT = 0, 1, 2, 3


def _cmd_run(args) -> int:
    import pytest

    from harness.suite import find_suites, load_suite

    paths = args.paths or ["suites"]
    for p in find_suites(paths):  # fail fast, without a traceback, on a bad suite
        load_suite(p)
    argv = [*paths, "-p", "harness.plugin", "-rs" if args.verbose else "-q", "--no-header"]
    if args.markers:
        argv += ["-m", args.markers]
    for opt, val in (("--harness-store", args.store), ("--harness-cache", args.cache),
                     ("--harness-baselines", args.baselines), ("--harness-report", args.report),
                     ("--harness-warmup", args.warmup), ("--harness-min-iterations", args.min_iterations),
                     ("--harness-min-duration", args.min_duration)):
        if val is not None:
            argv += [opt, str(val)]
    argv += args.pytest_args
    rc = pytest.main(argv)
    if rc == pytest.ExitCode.NO_TESTS_COLLECTED:
        print(f"error: no case selected from {', '.join(paths)} with -m {args.markers!r}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK if rc == 0 else EXIT_FAILED


def _cmd_validate(args) -> int:
    from harness.baselines import load_baselines
    from harness.plan import build_plan, validate_suite
    from harness.suite import find_suites, load_suite

    for p in find_suites(args.paths or ["suites"]):
        suite = load_suite(p)
        validate_suite(suite)
        print(f"{p}: {suite.model}, {len(suite.targets)} targets, {len(build_plan(suite))} cases")
    if args.baselines or Path("baselines.yaml").is_file():
        bf = load_baselines(args.baselines or "baselines.yaml")
        print(f"{args.baselines or 'baselines.yaml'}: {len(bf.baselines)} baselines, {len(bf.claims)} claims")
    return EXIT_OK


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
    run.add_argument("-v", "--verbose", action="store_true", help="list skip reasons")
    run.set_defaults(func=_cmd_run)

    from harness.reports.cli import register as register_reports

    register_reports(sub)  # report, compare, gate, readme, export

    from harness.crossdevice_cli import register as register_crossdevice

    register_crossdevice(sub)  # import, bundle, claims, devices

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
        return EXIT_INPUT


if __name__ == "__main__":
    sys.exit(main())
