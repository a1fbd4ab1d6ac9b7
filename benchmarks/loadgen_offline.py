"""Harness Offline vs MLPerf LoadGen Offline on one ONNX Runtime session: prints figures, asserts nothing.

    python benchmarks/loadgen_offline.py [--arch efficientnet_b0] [--batch 8] [--rounds 4] [--seconds 3]

Both drive the same OnnxRuntimeRunner (one session, one input batch):
  harness: harness.metrics.timing.measure (repetitions, median throughput)
  loadgen: harness.metrics.loadgen.run_loadgen, scenario Offline (samples/s)
interleaved in one process, alternating which goes first each round, so a
busy neighbour hits both alike. Prints each round's figures and the median
of the per-round ratios loadgen / harness (target >= 0.99), twice: against
the harness's reported figure (the median over its repetitions) and against
its pooled rate (all its timed images over all its timed seconds), which is
how LoadGen computes samples/s. On a noisy host the two estimators differ
(a median sets slow windows aside; a pooled rate pays for them), so the
pooled ratio is the one that isolates LoadGen's own cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.metrics.loadgen import estimate_qps, run_loadgen  # noqa: E402
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
    ap.add_argument("--rounds", type=int, default=4)
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
        ratios, pooled = [], []
        print(f"{args.arch} bs{args.batch} {args.size}px, ONNX Runtime {runner.version()}, "
              f"{args.rounds} rounds of about {args.seconds:.0f} s per side")
        for rnd in range(args.rounds):
            figs = {}
            order = ("harness", "loadgen") if rnd % 2 == 0 else ("loadgen", "harness")
            for side in order:
                if side == "harness":
                    t = measure(runner, x, cfg)
                    figs[side] = t.throughput_ips
                    figs["pooled"] = (args.batch * sum(r["iterations"] for r in t.repetitions)
                                      / sum(r["duration_s"] for r in t.repetitions))
                else:
                    s = run_loadgen(runner, x, "offline", min_duration_s=args.seconds, min_queries=1,
                                    expected_qps=qps)
                    figs[side] = float(s["result_samples_per_second"])
                    figs["validity"] = f"{s.get('result_validity')}, {s.get('effective_samples_per_query')} samples"
            ratios.append(figs["loadgen"] / figs["harness"])
            pooled.append(figs["loadgen"] / figs["pooled"])
            print(f"round {rnd + 1} ({order[0]} first): harness {figs['harness']:.2f} img/s (pooled "
                  f"{figs['pooled']:.2f}), loadgen {figs['loadgen']:.2f} samples/s ({figs['validity']}), "
                  f"ratio {ratios[-1]:.4f} (pooled {pooled[-1]:.4f})")
        runner.close()
    for name, rs in (("harness's median", ratios), ("harness's pooled rate", pooled)):
        print(f"loadgen / {name}: median {statistics.median(rs):.4f} over {len(rs)} rounds "
              f"(min {min(rs):.4f}, max {max(rs):.4f}); target >= 0.99")
    return 0


if __name__ == "__main__":
    sys.exit(main())
