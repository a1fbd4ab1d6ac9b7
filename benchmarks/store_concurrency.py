"""Many writers, one store: prints rows/s per back end, checks every row is there.

    python benchmarks/store_concurrency.py [--writers 8] [--results 50] [--url postgresql://...]

Starts `--writers` processes at the same instant; each opens the store (the
first ones create it: a new SQLite file, a new PostgreSQL database's tables),
begins its own run and adds `--results` results, one transaction each, as
`harness run` does. Then counts the rows and looks for "database is locked"
(or any error) in every writer's output. SQLite: a new file in a temporary
folder. PostgreSQL: `--url` (an empty database), or else a throwaway server
started here (tests/pg_server.py: Debian's postgresql package). Prints
figures, asserts nothing; exits 1 if a row is missing or a writer failed.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WRITER = """
import os, sys, time
sys.path.insert(0, {repo!r})
from harness.results.store import Store
from harness.results import Result
while not os.path.exists({go!r}):
    time.sleep(0.002)
s = Store({spec!r})
run = s.begin_run({{"hostname": "writer-{w}"}}, [])
for i in range({n}):
    s.add(Result(model="m", case=f"w{w}-c{{i}}", stage="throughput", status="passed", device="cpu", run_id=run,
                 metrics={{"throughput_ips": float(i)}}))
s.finish_run(run)
s.close()
print(time.time())
"""


def measure(spec: str, writers: int, per_writer: int, work: Path) -> dict:
    from harness.results.store import Store

    go = work / f"go-{time.monotonic_ns()}"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER.format(repo=str(REPO), go=str(go), spec=spec, w=w,
                                                                    n=per_writer)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in range(writers)]
    time.sleep(1.0 + 0.1 * writers)  # let every writer import and wait at the line
    t0 = time.time()
    go.write_text("go")
    ends, errors = [], []
    for p in procs:
        out, err = p.communicate(timeout=600)
        if p.returncode != 0 or "locked" in err:
            errors.append(err.strip().splitlines()[-1] if err.strip() else f"exit {p.returncode}")
        elif out.strip():
            ends.append(float(out.strip().splitlines()[-1]))
    elapsed = (max(ends) if ends else time.time()) - t0
    s = Store(spec, read_only=True)
    rows = s.count()
    cases = {r.case for r in s.results()}
    s.close()
    want = {f"w{w}-c{i}" for w in range(writers) for i in range(per_writer)}
    return {"rows": rows, "expected": len(want), "missing": len(want - cases), "errors": errors,
            "seconds": elapsed, "rows_per_s": rows / elapsed if elapsed > 0 else float("nan")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--results", type=int, default=50, help="results per writer")
    ap.add_argument("--url", help="an empty PostgreSQL database (default: start a throwaway server)")
    ap.add_argument("--skip-postgres", action="store_true")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="store-concurrency-"))
    backends = [("sqlite", str(work / "results.sqlite"))]
    bad = False
    with contextlib.ExitStack() as stack:  # a throwaway server lives until the measurements are done
        if not a.skip_postgres:
            from tests.pg_server import benchmark_database

            url = stack.enter_context(benchmark_database("concurrency", a.url))
            if url:
                backends.append(("postgresql", url))
        print(f"{a.writers} writers x {a.results} results, one transaction per result, all starting at once")
        for name, spec in backends:
            r = measure(spec, a.writers, a.results, work)
            bad |= bool(r["missing"] or r["errors"])
            print(f"{name:10} {r['rows']:5d}/{r['expected']} rows, {r['missing']} missing, "
                  f"{len(r['errors'])} writer errors, {r['seconds']:.2f} s, {r['rows_per_s']:.0f} rows/s")
            for e in r["errors"]:
                print(f"   error: {e}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
