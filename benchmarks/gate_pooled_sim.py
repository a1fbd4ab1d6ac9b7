"""Simulated supplement to benchmarks/gate_trials.py: the gate's interval rule
(harness.analysis.pooled) over many independent histories, no real timing.

Everything here is simulated; it says what the rule does under a stated noise
model, not what this host does (gate_trials.py measures that). Per run:
``day_state`` lognormal (between-run sd, default 1.5%, the value
gate_simulated.py uses), then k repetitions with lognormal noise (default
1%); the run's estimate and interval are harness.metrics.repetitions.median_ci
of its repetitions, exactly as a stored result's. Each trial draws its own
history of h clean A runs and one candidate (A, or B = A slowed by x), and
the verdict is harness.analysis.pooled.decide at a 5% threshold.

    python benchmarks/gate_pooled_sim.py [--trials 2000] [--between 0.015] [--rep 0.01] [--reps 3]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.analysis.pooled import decide, pooled_change, run_estimate  # noqa: E402
from harness.metrics.repetitions import median_ci  # noqa: E402


def run(rng, level, between, rep, k):
    day = level * np.exp(rng.normal(0, between))
    ci = median_ci(day * np.exp(rng.normal(0, rep, k)))
    return run_estimate(ci.median, ci.lo, ci.hi, k, ci.method)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--between", type=float, default=0.015)
    ap.add_argument("--rep", type=float, default=0.01)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    print(f"simulated: between-run sd {a.between:.1%}, repetition sd {a.rep:.1%}, {a.reps} repetitions a run, "
          f"{a.trials} independent trials per cell, threshold 5%")
    print("history  change  candidate runs |  REGRESSION   PASS  INCONCLUSIVE")
    for h in (1, 3, 6):
        for slow in (0.0, 0.05, 0.10, 0.17):
            for m in (1, 3):
                c = Counter()
                for _ in range(a.trials):
                    ref = [run(rng, 100.0, a.between, a.rep, a.reps) for _ in range(h)]
                    cand = [run(rng, 100.0 * (1 - slow), a.between, a.rep, a.reps) for _ in range(m)]
                    c[decide(pooled_change(ref, cand), 0.05, True)] += 1
                n = a.trials
                print(f"{h:7d}  {-slow:+6.0%}  {m:14d} | {c['regression'] / n:10.1%} {c['unchanged'] / n:6.1%} "
                      f"{c['inconclusive'] / n:12.1%}")


if __name__ == "__main__":
    main()
