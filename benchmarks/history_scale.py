"""A year of a team's nightly runs: how long do `harness gate`, `report`, `readme` take?

    python benchmarks/history_scale.py [--runs 365] [--samples 30] [--repeat 3] [--url postgresql://...]
                                       [--skip-postgres] [--skip-sqlite] [--commands gate,report,readme]

Generates `--runs` runs x 3 models x 5 devices x 6 batch sizes x 2 stages
(throughput with `--samples` per-iteration latencies each, and accuracy):
365 runs make 65,700 results. The figures are made up by a seeded generator
(tests/report_fixtures.py); they are written once per back end (SQLite file;
PostgreSQL at --url, or a throwaway server started here), then each command
runs as a user runs it (`python -m harness ...`, a new process, wall time
including start-up), `--repeat` times (median and best are printed: on a
shared host the spread is the other users' load). Targets: gate < 5 s, report < 15 s. Prints figures,
asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

MODELS = ("se_resnext50", "xception", "efficientnet_b0")
README = "".join(f"## {m}\n\n<!-- harness:table kind=throughput model={m} source=measured -->\n<!-- harness:end -->\n\n"
                 for m in MODELS)


def generate(spec: str, runs: int, samples: int) -> int:
    from report_fixtures import BATCHES, DEVICES, accuracy_result, env, latencies, throughput_result

    from harness.results.store import Store

    rng = np.random.default_rng(0)
    store = Store(spec)
    day0 = datetime(2025, 1, 1, 2, 0, tzinfo=timezone.utc)
    n = 0
    for i in range(runs):
        when = (day0 + timedelta(days=i)).isoformat(timespec="seconds")
        run_id = f"{(day0 + timedelta(days=i)).strftime('%Y%m%dT%H%M%SZ')}-{i:06x}"
        store.add_run({"run_id": run_id, "started_at": when, "finished_at": when, "status": "finished",
                       "argv": ["harness", "run", "suites"], "env": env()})
        batch = []
        for model in MODELS:
            for device, runner, scope, base in DEVICES:
                for bs in BATCHES:
                    r = throughput_result(run_id, model, device, runner, scope, bs,
                                          latencies(rng, base * bs ** 0.3, bs, samples))
                    a = accuracy_result(run_id, model, 79.0 + rng.normal(0, 0.05), 94.4)
                    a.case, a.device, a.batch_size = f"accuracy[{device}-{runner}-fp32-bs{bs}]", device, bs
                    a.target, a.runner, a.timing_scope = f"{device}-{runner}-fp32", runner, scope
                    r.created_at = a.created_at = when
                    batch += [r, a]
        store.add_many(batch)
        n += len(batch)
    store.close()
    return n


def timed(args: list[str], cwd: Path) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    return time.perf_counter() - t0, p.returncode, (p.stdout + p.stderr).strip().splitlines()[-1:]


def bench(name: str, spec: str, a, work: Path) -> None:
    t0 = time.perf_counter()
    n = generate(spec, a.runs, a.samples)
    print(f"{name}: {n} results in {a.runs} runs written in {time.perf_counter() - t0:.1f} s")
    readme = work / f"README-{name}.md"
    readme.write_text(README)
    for label, args in (("gate", ["gate", "--store", spec, "--baselines", str(REPO / "baselines.yaml")]),
                        ("report", ["report", "--store", spec, "--baselines", str(REPO / "baselines.yaml"),
                                    "--out", str(work / f"report-{name}.html")]),
                        ("readme", ["readme", str(readme), "--store", spec,
                                    "--baselines", str(REPO / "baselines.yaml")])):
        if label not in a.commands.split(","):
            continue
        times = []
        for _ in range(a.repeat):
            secs, rc, last = timed(args, work)
            times.append(secs)
        print(f"  harness {label:7} median {sorted(times)[len(times) // 2]:6.2f} s, best {min(times):6.2f} s "
              f"of {a.repeat} ({' '.join(f'{t:.2f}' for t in times)})  exit {rc}: {last[0][:90] if last else ''}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=365)
    ap.add_argument("--samples", type=int, default=30, help="per-iteration latencies kept per throughput result")
    ap.add_argument("--url", help="an empty PostgreSQL database (default: start a throwaway server)")
    ap.add_argument("--skip-postgres", action="store_true")
    ap.add_argument("--skip-sqlite", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="time each command this many times")
    ap.add_argument("--commands", default="gate,report,readme", help="which to time (comma-separated)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="history-scale-"))
    print(f"{a.runs} runs x {len(MODELS)} models x 5 devices x 6 batch sizes x 2 stages; "
          f"{a.samples} latencies per throughput result")
    if not a.skip_sqlite:
        bench("sqlite", str(work / "history.sqlite"), a, work)
    if a.skip_postgres:
        return 0
    from pg_server import benchmark_database

    with benchmark_database("history", a.url) as url:
        if url is not None:
            bench("postgresql", url, a, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
