"""Harness Offline vs MLPerf LoadGen Offline on one ONNX Runtime session: prints figures, asserts nothing.

    python benchmarks/loadgen_offline.py [--arch efficientnet_b0] [--batch 8] [--rounds 12] [--seconds 3]

Both drive the same OnnxRuntimeRunner (one session, one input batch):
  harness: harness.metrics.timing.measure (repetitions, median throughput)
  loadgen: harness.metrics.loadgen.run_loadgen, scenario Offline (samples/s)
  plain:   a bare loop of run + synchronize over the same number of images
           as LoadGen's query, timed as one window (the reference neither
           estimator touches)
interleaved in one process, rotating which goes first each round, so a busy
neighbour hits all alike. Prints each round's figures, then the median of the
per-round ratios with a distribution-free 95% interval (the same order
statistics the harness puts on its own medians): loadgen / harness (target
>= 0.99), loadgen / harness's pooled rate (all its timed images over all its
timed seconds, which is how LoadGen computes samples/s), and loadgen / plain
and harness / plain, which split a gap into LoadGen's cost and the harness's
estimator.

What LoadGen costs here: its logger thread wakes every 10 ms
(kLogPollPeriod in loadgen/logging.cc) and, with every core busy in ONNX
Runtime, preempts a compute thread (about 4x the involuntary context
switches of the bare loop); LoadGen's own timing matches the SUT's clock to
within 0.01%.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.metrics.loadgen import estimate_qps, run_loadgen  # noqa: E402
from harness.metrics.repetitions import median_ci  # noqa: E402
from harness.metrics.timing import TimingConfig, measure  # noqa: E402
from harness.runners.onnxruntime import OnnxRuntimeRunner  # noqa: E402


def export(arch: str, batch: int, size: int, out: Path) -> Path:
    from harness.models import mindspore_net as networks

    networks.set_context("CPU")
    return networks.export(networks.build_network(arch, 1000), (batch, 3, size, size), "ONNX", out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="efficientnet_b0")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=3.0, help="each side's measured time per round")
    ap.add_argument("--onnx", help="an existing ONNX file with a fixed batch (skips the export)")
    args = ap.parse_args()
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.onnx) if args.onnx else export(args.arch, args.batch, args.size, Path(tmp) / "m.onnx")
        x = np.random.default_rng(0).standard_normal((args.batch, 3, args.size, args.size), dtype=np.float32)
        runner = OnnxRuntimeRunner("cpu")
        runner.load(path, x.shape)
        cfg = TimingConfig(warmup=3, min_iterations=3, min_duration_s=args.seconds, repetitions=3,
                           budget_s=2 * args.seconds, max_repetitions=5)
        qps = estimate_qps(runner, x, 1.0)
        ratios = {"loadgen / harness": [], "loadgen / harness pooled": [], "loadgen / plain": [],
                  "harness / plain": []}
        print(f"{args.arch} bs{args.batch} {args.size}px, ONNX Runtime {runner.version()}, "
              f"{args.rounds} rounds of about {args.seconds:.0f} s per side")
        sides = ("harness", "loadgen", "plain")
        for rnd in range(args.rounds):
            figs = {}
            order = sides[rnd % 3:] + sides[:rnd % 3]
            for side in order:
                if side == "harness":
                    t = measure(runner, x, cfg)
                    used = [r for r in t.repetitions if r["used"]]
                    figs[side] = t.throughput_ips
                    figs["pooled"] = (args.batch * sum(r["iterations"] for r in used)
                                      / sum(r["duration_s"] for r in used))
                elif side == "loadgen":
                    s = run_loadgen(runner, x, "offline", min_duration_s=args.seconds, min_queries=1,
                                    expected_qps=qps)
                    figs[side] = float(s["result_samples_per_second"])
                    figs["samples"] = int(s.get("effective_samples_per_query") or 0)
                    figs["validity"] = f"{s.get('result_validity')}, {figs['samples']} samples"
                else:
                    n = max(1, (figs.get("samples") or int(qps * args.seconds * 1.1)) // args.batch)
                    t0 = time.perf_counter()
                    for _ in range(n):
                        runner.run(x)
                        runner.synchronize()
                    figs[side] = n * args.batch / (time.perf_counter() - t0)
            for name, (a, b) in zip(ratios, (("loadgen", "harness"), ("loadgen", "pooled"),
                                              ("loadgen", "plain"), ("harness", "plain"))):
                ratios[name].append(figs[a] / figs[b])
            print(f"round {rnd + 1} ({order[0]} first): harness {figs['harness']:.2f} img/s (pooled "
                  f"{figs['pooled']:.2f}), loadgen {figs['loadgen']:.2f} samples/s ({figs['validity']}), "
                  f"plain {figs['plain']:.2f} img/s; loadgen / harness {ratios['loadgen / harness'][-1]:.4f}")
        runner.close()
    for name, rs in ratios.items():
        ci = median_ci(rs)
        goal = "; target >= 0.99" if name == "loadgen / harness" else ""
        print(f"{name}: median {ci.median:.4f}, 95% interval [{ci.lo:.4f}, {ci.hi:.4f}] ({ci.method}) "
              f"over {len(rs)} rounds (min {min(rs):.4f}, max {max(rs):.4f}){goal}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
