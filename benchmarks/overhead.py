"""How much does the harness's timing loop cost? (a benchmark, not a test)

For one ONNX Runtime session per batch size, alternates rounds of
  raw:     t0 = perf_counter(); for _ in range(n): session.run(...); elapsed
  harness: harness.metrics.timing.measure(runner, batch, ...) on the same session
and prints harness throughput / raw throughput (median over rounds).
Target: >= 0.98. Also prints the null runner's per-iteration cost, which is
the loop's own overhead with no model at all.

    python benchmarks/overhead.py                      # EfficientNet-B0 from the suite (needs MindSpore)
    python benchmarks/overhead.py --onnx model.onnx --batch-sizes 1 8
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.runners.null import NullRunner  # noqa: E402
from harness.runners.onnxruntime import OnnxRuntimeRunner  # noqa: E402
from harness.metrics.timing import TimingConfig, measure  # noqa: E402


def onnx_files(args) -> dict[int, Path]:
    if args.onnx:
        return {b: Path(args.onnx) for b in args.batch_sizes}
    from harness.session import HarnessSession
    from harness.config.suite import load_suite

    suite = load_suite(args.suite)
    s = HarnessSession(store=args.store, argv=sys.argv)
    try:
        return {b: s.artifact(suite, "onnx", b).path for b in args.batch_sizes}
    finally:
        s.finish()


def raw_loop(session, name, x, n) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        session.run(None, {name: x})
    return n * len(x) / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="suites/efficientnet_b0")
    ap.add_argument("--onnx", help="use this ONNX file (dynamic batch) instead of exporting the suite's model")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16, 32, 64])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--seconds", type=float, default=2.0, help="target seconds per measurement")
    ap.add_argument("--store", default="/tmp/harness-overhead.sqlite", help="store for the export run")
    args = ap.parse_args()

    files = onnx_files(args)
    print(f"{'batch':>5} {'raw img/s':>10} {'harness img/s':>14} {'ratio':>7} {'ratio IQR':>15}  rounds  iters/round")
    medians = []
    for b, path in files.items():
        runner = OnnxRuntimeRunner("cpu")
        runner.load(path, (b,))
        sess, name = runner.session, runner.input_name
        dims = [d if isinstance(d, int) else 224 for d in sess.get_inputs()[0].shape[1:]]
        x = np.random.default_rng(0).standard_normal((b, *dims)).astype(np.float32)
        for _ in range(3):  # warm both paths up once
            sess.run(None, {name: x})
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        # at least 10 iterations a round: with fewer, one slow iteration decides the ratio
        n = max(10, int(args.seconds / (time.perf_counter() - t0)))
        # one repetition of n iterations, as the raw loop: the timing loop's own cost is measured
        cfg = TimingConfig(warmup=0, min_iterations=n, min_duration_s=0, repetitions=1, max_repetitions=1,
                           min_repetition_s=0)
        raw, har = [], []
        for r in range(args.rounds):
            # alternate which goes first so drift (thermal, other load) hits both alike
            if r % 2 == 0:
                raw.append(raw_loop(sess, name, x, n))
                har.append(measure(runner, x, cfg).throughput_ips)
            else:
                har.append(measure(runner, x, cfg).throughput_ips)
                raw.append(raw_loop(sess, name, x, n))
        paired = np.array(har) / np.array(raw)  # one ratio per adjacent pair
        med = float(np.median(paired))
        q1, q3 = np.percentile(paired, [25, 75])
        medians.append(med)
        print(f"{b:>5} {statistics.median(raw):>10.2f} {statistics.median(har):>14.2f} {med:>7.4f} "
              f"{f'{q1:.3f}-{q3:.3f}':>15}  {args.rounds:>6}  {n:>11}")
        runner.close()

    null = NullRunner("cpu")
    null.load(None, (1, 3, 8, 8))
    t = measure(null, np.zeros((1, 3, 8, 8), np.float32),
                TimingConfig(warmup=100, warmup_max_s=0, min_iterations=100000, min_duration_s=0, repetitions=1,
                             max_repetitions=1, min_repetition_s=0))
    print(f"null runner: {t.latency_ms_mean * 1e3:.2f} us per timed iteration (the loop's own cost)")
    worst = min(medians)
    print(f"lowest median ratio {worst:.4f} (target >= 0.98): {'OK' if worst >= 0.98 else 'BELOW TARGET'}; "
          f"the IQR column shows this machine's run-to-run noise")
    return 0


if __name__ == "__main__":
    sys.exit(main())
