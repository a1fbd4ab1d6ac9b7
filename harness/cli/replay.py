"""`harness replay`: move results the store could not take (kept in the journal) into it.

    harness replay                       # the default store ($HARNESS_STORE or .harness/results.sqlite)
    harness replay --store postgresql://ci@db:5432/bench

A result the store already holds (same run, case, identity and time) is not
added again, so replaying twice, or after the next run already replayed, adds
nothing. The next `harness run` into the same store replays by itself first.
Exit 0 when everything kept is stored (or nothing was kept); 7 (NOT_STORED)
when the store still cannot take it (the journal is kept as it was).
"""

from __future__ import annotations

import sys

from harness.errors import ExitCode
from harness.results.journal import Journal, journal_dir, replay
from harness.results.store import Store, StoreUnavailable


def _cmd_replay(args) -> int:
    store = Store(args.store)
    root = journal_dir(args.cache)
    try:
        pending = Journal(store, root).pending()
        done = replay(store, root)
    except StoreUnavailable as exc:
        print(f"harness replay: not replayed, exit {ExitCode.NOT_STORED:d}: {exc}", file=sys.stderr)
        return ExitCode.NOT_STORED
    finally:
        store.close()
    if not done:
        print(f"nothing kept for {store.location} (journal folder {root})")
    else:
        print(f"{store.location}: {done['added']} kept result(s) stored, {done['already']} already there "
              f"(of {pending}), {done['runs']} run(s) recorded; journal {done['journal']} replayed")
    return ExitCode.OK


def register(sub) -> None:
    p = sub.add_parser("replay", help="store the results a run kept in its journal when the store could not "
                                      "take them (exactly once)")
    p.add_argument("--store", help="results store (default $HARNESS_STORE or .harness/results.sqlite)")
    p.add_argument("--cache", help="the artifact cache the run used; the journal lies beside it "
                                   "(default $HARNESS_JOURNAL, else beside $HARNESS_CACHE or .harness/cache)")
    p.set_defaults(func=_cmd_replay)
