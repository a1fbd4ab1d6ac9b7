"""`harness report | compare | gate | readme | export`: commands over the store.

They only read stores (opened read-only) and baselines.yaml; `readme`
writes the README, `report` and `export` their output file.

Every output path is checked before the work (harness.fsio.check_writable):
one that cannot be written is an input error (3) before anything is
computed. A side output that still fails afterwards (`gate --json`) never
changes the verdict: the verdict's exit code stands and an error line says
what was not written.

Exit codes (gate and compare): 0 pass; 1 a significant regression or a
failed measured claim; 2 usage; 3 error in the input (missing, corrupt or
foreign store, newer format, bad thresholds file); 4 nothing was compared
("0 of N compared"); 6 inconclusive (a candidate contended or too imprecise
to decide, and no regression). `readme --check`: 0 up to date, 1 stale.
`export`: 1 nothing to export (and no file written).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.analysis.gate_outcome import format_outcome
from harness.analysis.regression import DEFAULT_HISTORY, DEFAULT_METRICS, METRIC_DIRECTION, evaluate, evaluate_claims
from harness.analysis.thresholds import load_thresholds
from harness.cli.remeasure import DEFAULT_BUDGET_S, remeasure
from harness.config.baselines import load_baselines, locate_baselines
from harness.errors import ExitCode, UserError
from harness.fsio import atomic_path, check_writable, write_text
from harness.reports import readme as rt
from harness.reports import write_report
from harness.results.history import load_history, run_order
from harness.results.interchange import to_dataframe, to_pytest_benchmark
from harness.results.store import default_path

STORE_HELP = "results store: an SQLite file or postgresql://USER@HOST:PORT/DB; repeat to read several " \
             "(e.g. one per device host). Default $HARNESS_STORE or .harness/results.sqlite"
EXIT_CODES = f"""exit codes:
  {ExitCode.OK:d}  pass
  {ExitCode.FAILED:d}  regression: a metric got significantly worse past its threshold, or a measured claim failed
  {ExitCode.USAGE:d}  usage error (bad arguments)
  {ExitCode.INPUT:d}  input error: store missing, corrupt, foreign or newer than this harness; bad thresholds file
  {ExitCode.NOTHING_COMPARED:d}  nothing compared: no candidate result had a clean earlier result of its benchmark key
  {ExitCode.INCONCLUSIVE:d}  inconclusive: no regression, but a candidate was contended (measured beside busy
     processes) or its interval was too wide to decide; `gate --remeasure` measures those again
"""


def _baselines(args, required=False):
    path = locate_baselines(args.baselines, required=required)
    return load_baselines(path) if path else None


def _thresholds(args):
    th = load_thresholds(args.thresholds)
    for spec in args.threshold or []:
        th.add_spec(spec)
    return th


def _print_outcome(out, args, subject: str = "GATE") -> int:
    print(format_outcome(out, verbose=args.verbose, subject=subject))
    if args.json:
        doc = {"verdict": out.verdict, "exit_code": out.exit_code, "candidate_runs": out.candidate_runs,
               "comparisons": [c.to_dict() for c in out.comparisons], "missing_baseline": out.missing_baseline,
               "missing_candidate": out.missing_candidate, "notes": out.notes, "inconclusive": out.inconclusive,
               "claims": [getattr(c, "__dict__", str(c)) for c in out.claims]}
        _side_output(args.json, json.dumps(doc, indent=2, default=str))
    return out.exit_code


def _side_output(path, text: str) -> None:
    """Write a side output; a failure is one error line and never changes the verdict."""
    try:
        write_text(path, text)
    except UserError as exc:
        print(f"error: side output not written (the verdict above and its exit code stand): {exc}",
              file=sys.stderr)


def _cmd_report(args) -> int:
    check_writable(args.out, what="report")
    out = write_report(args.store or default_path(), args.out, baselines=locate_baselines(args.baselines),
                       run_id=args.run)
    print(f"report: {out}")
    return ExitCode.OK


def _check_json(args) -> None:
    if args.json:
        check_writable(args.json, what="--json file")


def _cmd_gate(args) -> int:
    _check_json(args)
    th = _thresholds(args)
    bf = _baselines(args)
    pinned: list[str] = []
    last: dict = {}

    def judge(remeasured: dict):
        # only the candidate runs and the newest --history clean results of each case are read
        history = load_history(args.store, gate_depth=args.history,
                               candidates=[*(pinned or args.run or []), *remeasured] if args.run else None)
        if args.run and not pinned:
            pinned.extend(history.candidates or [])
        out = evaluate(history, candidate_runs=list(pinned) if args.run else None,
                       metrics=args.metric or _default_metrics(), thresholds=th, depth=args.history,
                       models=args.model, devices=args.device, remeasured=remeasured)
        last["history"] = history
        return history, out

    if args.remeasure is not None:
        if args.remeasure <= 0:
            raise _Usage("--remeasure takes a budget in seconds above 0 (e.g. --remeasure=300)")
        out = remeasure(judge, args.remeasure, (args.store or [None])[0], say=print)
        history = last["history"]
    else:
        history, out = judge({})
    out.claims, note = evaluate_claims(history, out.candidate_runs, bf)
    if note:
        out.notes.append(note)
    out.notes += history.run_notes(out.candidate_runs)  # a clock far from the store's: flagged, never the order
    return _print_outcome(out, args)


def _default_metrics():
    return list(DEFAULT_METRICS)


def _cmd_compare(args) -> int:
    if args.list:
        history = load_history(args.store)
        for r in sorted(history.runs.values(), key=run_order):  # the store's order, not the clock
            n = sum(1 for x in history.results if x.run_id == r["run_id"])
            print(f"{r['run_id']}  {r['status']:11} {_plural(n, 'result'):>12}  host {(r.get('env') or {}).get('hostname')}")
        return ExitCode.OK
    if not (args.a and args.b):
        raise _Usage("compare needs two runs: harness compare A B (or --list to see the runs)")
    _check_json(args)
    stores = list(args.store or [])
    refs = []
    for ref in (args.a, args.b):
        # a store file stands for its newest run
        if Path(ref).is_file():
            stores.append(ref)
            refs.append((ref, "latest"))
        else:
            refs.append((None, ref))
    history = load_history(stores or None)
    ids = []
    for path, ref in refs:
        if path is not None:
            ids.append(load_history([path]).resolve_run("latest"))
        else:
            ids.append(history.resolve_run(ref))
    out = evaluate(history, candidate_runs=[ids[1]], baseline_runs=[ids[0]],
                   metrics=args.metric or _default_metrics(), thresholds=_thresholds(args), depth=1,
                   models=args.model, devices=args.device)
    return _print_outcome(out, args, subject="COMPARISON")


def _cmd_readme(args) -> int:
    bf = _baselines(args, required=True)
    if not args.check:
        check_writable(args.readme, what="README")
    old, new, stale = rt.refresh(args.readme, bf, lambda: load_history(args.store))
    if args.check:
        if stale:
            print(f"{args.readme}: {len(stale)} table(s) out of date (lines "
                  f"{', '.join(str(b.begin + 1) for b in stale)}); run `harness readme {args.readme}`")
            print(rt.diff(old, new, args.readme), end="")
            return ExitCode.FAILED
        print(f"{args.readme}: tables up to date")
        return ExitCode.OK
    if stale:
        rt.write(args.readme, new)
    print(f"{args.readme}: {len(stale)} table(s) updated" if stale else f"{args.readme}: tables up to date")
    return ExitCode.OK


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _cmd_export(args) -> int:
    """Writes the file only when there is something to export: a failed export leaves nothing behind."""
    check_writable(args.out, what="export file")
    history = load_history(args.store)
    if args.format == "csv":
        df = to_dataframe(history)
        if df.empty:
            print(f"error: nothing exported, {args.out} not written: the store holds no result\n"
                  "  fix: run some cases first (harness run), or pass the --store that holds them", file=sys.stderr)
            return ExitCode.FAILED
        with atomic_path(args.out, mode=0o644) as tmp:
            df.to_csv(tmp, index=False)
        print(f"{args.out}: {_plural(len(df), 'result')}")
        return ExitCode.OK

    run = history.resolve_run(args.run or "latest")
    if Path(args.out).is_dir():
        raise UserError("output path is a directory", path=args.out, fix="name a .json file")
    doc, skipped = to_pytest_benchmark(history, run)
    n = len(doc["benchmarks"])
    for s in skipped:
        print(f"  left out: {s}")
    if n == 0:
        print(f"error: nothing exported, {args.out} not written: run {run} has no throughput result with "
              "per-iteration latencies\n  fix: pick a run with throughput cases (harness compare --list), "
              "or export every result with --format csv", file=sys.stderr)
        return ExitCode.FAILED
    write_text(args.out, json.dumps(doc, indent=2))
    print(f"{args.out}: {_plural(n, 'benchmark')} from run {run}")
    return ExitCode.OK


class _Usage(Exception):
    pass


def _wrap(func):
    def run(args):
        try:
            return func(args)
        except _Usage as exc:
            print(f"harness {args.command}: error: {exc}", file=sys.stderr)
            return ExitCode.USAGE
    return run


def _gate_options(p, *, candidates: bool):
    p.add_argument("--store", action="append", help=STORE_HELP)

    p.add_argument("--metric", action="append", metavar="NAME", choices=list(METRIC_DIRECTION),
                   help="metric to gate; repeat for several (default throughput_ips, latency_ms_p50, top1, top5; "
                        "also latency_ms_mean/p90/p99)")
    p.add_argument("--threshold", action="append", metavar="SPEC",
                   help="metric[:model[:device]]=5%% (relative) or =0.2 (absolute; accuracy in points); "
                        "wildcards allowed, later ones win, e.g. 'throughput_ips:*:ascend*=3%%'")
    p.add_argument("--thresholds", metavar="FILE", help="thresholds YAML (format in docs/nightly-ci.md)")
    p.add_argument("--model", action="append", help="only this model (repeatable)")
    p.add_argument("--device", action="append", help="only this device family, wildcards allowed (repeatable)")
    p.add_argument("--json", metavar="FILE", help="also write the outcome as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="list unchanged comparisons and passed claims too")
    if candidates:
        p.add_argument("--run", action="append", metavar="RUN_ID",
                       help="candidate run (repeatable; unique prefixes work). Default: the newest run of each host")
        p.add_argument("--history", type=int, default=DEFAULT_HISTORY, metavar="N",
                       help=f"follow the newest N clean earlier runs of each benchmark key (default {DEFAULT_HISTORY})")
        p.add_argument("--baselines", help="baselines.yaml for relative-device claims (default ./baselines.yaml)")
        p.add_argument("--remeasure", nargs="?", type=float, const=DEFAULT_BUDGET_S, default=None, metavar="SECONDS",
                       help="run again, on this machine and into the same store, the candidate cases the gate could "
                            "not judge (contended, or an interval too wide to decide), round after round until "
                            f"each is decided or SECONDS are spent (default {DEFAULT_BUDGET_S:g}); then judge again. "
                            "The suites are found from the candidate run's command line, from this directory")


def register(sub) -> None:
    """Add report, compare, gate, readme and export to the `harness` parser."""
    fmt = argparse.RawDescriptionHelpFormatter
    rep = sub.add_parser(
        "report", help="render the HTML report from the store", formatter_class=fmt,
        description="Render one self-contained HTML page (opens offline, fetches nothing) from the store:\n"
                    "per model accuracy against the documented baselines, throughput and latency vs batch size\n"
                    "per device, best batch, cross-device ratios and claims, export parity, gate verdicts,\n"
                    "the history of each metric over runs, and the environment.\n\n"
                    "example:\n  harness report --store .harness/results.sqlite --out report.html")
    rep.add_argument("--store", help="results store: an SQLite file or postgresql://USER@HOST:PORT/DB "
                                     "(default $HARNESS_STORE or .harness/results.sqlite)")
    rep.add_argument("--baselines", help="baselines file (default baselines.yaml if present)")
    rep.add_argument("--out", default="report.html", help="output file (default report.html)")
    rep.add_argument("--run", help="show only this run's results (default: newest result of each case)")
    rep.set_defaults(func=_wrap(_cmd_report))

    cmp_ = sub.add_parser(
        "compare", help="compare two runs (A = reference, B = candidate)", formatter_class=fmt,
        description="Compare run B against run A, case by case for results with the same identity.\n"
                    "A and B are run ids (or unique prefixes) in --store, or store files (their newest run).\n\n"
                    "examples:\n  harness compare --list\n  harness compare 20250101T0200 20250102T0200\n"
                    "  harness compare last-week.sqlite tonight.sqlite --threshold throughput_ips=3%",
        epilog=EXIT_CODES)
    cmp_.add_argument("a", nargs="?", help="reference run id or store file")
    cmp_.add_argument("b", nargs="?", help="candidate run id or store file")
    cmp_.add_argument("--list", action="store_true", help="list the runs in the store(s) and exit")
    _gate_options(cmp_, candidates=False)
    cmp_.set_defaults(func=_wrap(_cmd_compare))

    gate = sub.add_parser(
        "gate", help="fail on regressions against history and on failed claims (nightly CI)", formatter_class=fmt,
        description="Hold the candidates (default: per benchmark key, the newest run of each host that measured it;\n"
                    "a run that only skipped a case does not hide the run before it) against history: each result\n"
                    "follows the clean earlier results of its benchmark key on the same machine class, across\n"
                    "versions. Throughput and latency: the change against the pooled clean history (all its runs\n"
                    "as replicates, so the spread between runs counts) with a 95% interval. REGRESSION: the\n"
                    "interval excludes 0 and the change is past the threshold; PASS: the interval's bad-side bound\n"
                    "is inside the threshold; INCONCLUSIVE otherwise, saying what precision would decide it. From\n"
                    "6 clean runs, change points (PELT) pick the segment the candidate is held against. top1/top5:\n"
                    "Fisher's exact test. Contended results (busy neighbours) are never judged nor a reference;\n"
                    "--remeasure runs those, and the undecided, again. Also evaluates the relative-device claims\n"
                    "in baselines.yaml on the candidate results; a failed measured claim fails the gate. A gate that\n"
                    "compared nothing fails and lists what is missing on each side.\n\n"
                    "examples:\n  harness gate --store history.sqlite\n"
                    "  harness gate --store history.sqlite --store host-310p.sqlite --thresholds gate.yaml\n"
                    "  harness run suites -m cpu && harness gate --remeasure      # a CPU nightly",
        epilog=EXIT_CODES)
    _gate_options(gate, candidates=True)
    gate.set_defaults(func=_wrap(_cmd_gate))

    rd = sub.add_parser(
        "readme", help="update (or --check) the markdown tables between markers in a README",
        formatter_class=fmt,
        description="Regenerate every block between\n"
                    "  <!-- harness:table kind=throughput model=se_resnext50 source=documented -->\n"
                    "  <!-- harness:end -->\n"
                    "kind: throughput (batch x device, ratio columns, best-batch row) or accuracy;\n"
                    "source: documented (baselines.yaml, no store needed) or measured (the store);\n"
                    "optional document=PREFIX, ratios=ascend310p/ascend310,..., devices=cpu,gpu.\n\n"
                    "examples:\n  harness readme README.md\n  harness readme README.md --check   # CI: exit 1 when stale",
    )
    rd.add_argument("readme", nargs="?", default="README.md", help="the markdown file (default README.md)")
    rd.add_argument("--check", action="store_true", help="write nothing; exit 1 and show a diff when stale")
    rd.add_argument("--store", action="append", help=STORE_HELP + " (only for source=measured tables)")
    rd.add_argument("--baselines", help="baselines file (default baselines.yaml if present)")
    rd.set_defaults(func=_wrap(_cmd_readme))

    ex = sub.add_parser(
        "export", help="export results for other tools (pytest-benchmark JSON, CSV)", formatter_class=fmt,
        description="examples:\n  harness export --out run.json          # pytest-benchmark JSON of the newest run\n"
                    "  pytest-benchmark compare old.json run.json\n  harness export --format csv --out results.csv\n"
                    "In Python: harness.results.interchange.to_dataframe(harness.results.history.load_history([path]))")
    ex.add_argument("--format", choices=("pytest-benchmark", "csv"), default="pytest-benchmark",
                    help="pytest-benchmark: one run's throughput cases as pytest-benchmark JSON (default); "
                         "csv: every stored result, one row each")
    ex.add_argument("--out", required=True, help="output file")
    ex.add_argument("--run", help="run id (pytest-benchmark format; default the newest run)")
    ex.add_argument("--store", action="append", help=STORE_HELP)
    ex.set_defaults(func=_wrap(_cmd_export))
