"""`harness show [RUN]`: a stored run's results as the tables `harness run` prints at its end.

    harness show                  # the newest run in .harness/results.sqlite
    harness show 3f2a --store ci.sqlite

On a terminal the tables are drawn with rich; piped or in CI they are plain text.
"""

from __future__ import annotations

import sys

from harness.errors import ExitCode
from harness.reports.terminal import render
from harness.results.history import load_history
from harness.results.store import default_path


def _cmd_show(args) -> int:
    # a file or a database URL; the store refuses a missing one with its own message
    history = load_history([args.store or default_path()])
    run_id = history.resolve_run(args.run or "latest")
    run = history.runs[run_id]
    results = history.run_results([run_id])
    terminal = sys.stdout.isatty() if args.color == "auto" else args.color == "always"
    n = len(results)
    title = f"run {run_id} ({run.get('status')}, started {run.get('started_at')}): {n} result{'' if n == 1 else 's'}"
    sys.stdout.write(render(results, terminal=terminal, title=title))
    for note in history.run_notes([run_id]):
        print(f"note: {note}")
    return ExitCode.OK


def register(sub) -> None:
    p = sub.add_parser("show", help="print a stored run's results as tables (default: the newest run)",
                       description="Print a stored run's results: per model, target, batch, throughput ± its "
                                   "95% interval, latency p50/p99, GFLOP/s and the fraction of the peak, the "
                                   "documented figure and verdict; parity and accuracy lines; skipped device "
                                   "families with their reason.")
    p.add_argument("run", nargs="?", help="run id or a unique prefix (default: the newest run)")
    p.add_argument("--store", help="results store (default $HARNESS_STORE or .harness/results.sqlite)")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="draw with colour and box characters: auto (on a terminal), always, never")
    p.set_defaults(func=_cmd_show)
