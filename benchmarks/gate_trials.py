"""The experiment that decides the gate (issue 22): independent trials, real timing.

Each trial builds its own history in a fresh store, through the harness:
history runs are HarnessSession runs of the suite's throughput case (ONNX
Runtime CPU, the small CNN of benchmarks/gate_ab.py, batch 8), and the gate is
`harness gate` itself (in process for the plain verdicts; `python -m harness
gate --remeasure=S` as a subprocess, which reruns the undecided case through
`harness run` with its node id into the same store).

One trial:
  1. A1, A2, A3: three runs of version A (a nightly's clean history);
  2. A4 beside a busy core (a process spinning on one core): plain gate
     (A/A beside a neighbour), then, the neighbour stopped, gate --remeasure;
  3. B17 (+17% work): plain gate, then gate --remeasure (the Done-when row);
  4. on a copy of the store after step 1 (a 3-run history):
     B10 (+10% work): plain gate, then gate --remeasure;
     B17 imprecise (2 short repetitions): plain gate;
     B5 (+5% work): plain gate.
  Cells judged on the trial's own runs without new measurements (the
  history as the gate would have seen it, by run subsets): history 1
  (A1 -> B17, and A/A A1 -> A2), history 3 (A1..A3 -> B17), history 6 when
  the trial's clean A runs reach 6 (A runs of the remeasure included).

"Work": the side branch's multiply-adds over A's (ONNX graph arithmetic);
the slowdown each B actually costs is measured too (interleaved
InferenceSession.run loops in this process) and printed.

Also printed: the coverage of a run's printed 95% interval over every clean
A run of the experiment (one key, one host): the share containing the median
of all of them, within-run as printed, and widened by the between-run spread
learned from the *other* runs (the calibrated interval the gate prints).

Counts carry 95% Clopper-Pearson intervals (scipy.stats.binomtest). The host
load average is printed per trial: on a shared machine it decides much.

    python benchmarks/gate_trials.py --trials 10 --remeasure 25
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness.analysis.pooled import Z95, between_run, run_estimate  # noqa: E402
from harness.analysis.regression import evaluate  # noqa: E402
from harness.errors import ExitCode  # noqa: E402
from harness.plan import build_plan, read_suite  # noqa: E402
from harness.results.history import History, load_history  # noqa: E402
from harness.session import HarnessSession  # noqa: E402

SIZE, BATCH = 64, 8
VERDICT = {ExitCode.OK: "PASS", ExitCode.FAILED: "REGRESSION", ExitCode.INCONCLUSIVE: "INCONCLUSIVE",
           ExitCode.NOTHING_COMPARED: "NOTHING"}
SUITE = """\
model: gate_bench
source: {{kind: onnx, path: {onnx}, num_classes: 10}}
input: {{size: {size}, preprocess: imagenet_resize256_crop224}}
targets:
  - {{name: ort, device: cpu, runner: onnxruntime, format: onnx, batch_sizes: [{bs}], stages: [throughput],
     options: {{intra_op_num_threads: 1}}}}
{timing}"""
IMPRECISE = "repetitions: 2, max_repetitions: 2, min_duration_s: 0.3, min_repetition_s: 0.1"
TIMING = [""]  # extra timing fields for every run (--contention-threshold)


def make_model(path: Path, side: int = 0) -> tuple[Path, int]:
    """A small CNN; with side > 0 a side branch of `side` 32->32 3x3 convolutions at
    16x16 (each about 2% of A's multiply-adds) added to the logits x 0. (path, MACs)."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    inits, nodes, macs = [], [], [0]

    def conv(name, x, cin, cout, hw_out, stride=1):
        w = rng.normal(0, (2.0 / (cin * 9)) ** 0.5, (cout, cin, 3, 3)).astype(np.float32)
        inits.append(helper.make_tensor(f"{name}_w", TensorProto.FLOAT, w.shape, w.flatten().tolist()))
        nodes.append(helper.make_node("Conv", [x, f"{name}_w"], [f"{name}_c"], pads=[1, 1, 1, 1],
                                      strides=[stride, stride]))
        nodes.append(helper.make_node("Relu", [f"{name}_c"], [name]))
        macs[0] += cin * cout * 9 * hw_out * hw_out
        return name

    x = conv("c1", "image", 3, 32, 32, 2)
    x = conv("c2", x, 32, 64, 32)
    x = conv("c3", x, 64, 64, 32)
    x = conv("c4", x, 64, 128, 16, 2)
    x = conv("c5", x, 128, 128, 16)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1))
    fc = rng.normal(0, 0.1, (128, 10)).astype(np.float32)
    inits.append(helper.make_tensor("fc", TensorProto.FLOAT, fc.shape, fc.flatten().tolist()))
    nodes.append(helper.make_node("MatMul", ["flat", "fc"], ["logits"]))
    out = "logits"
    if side:
        s = conv("s0", "c2", 64, 32, 16, 2)
        for i in range(1, side):
            s = conv(f"s{i}", s, 32, 32, 16)
        nodes.append(helper.make_node("ReduceMean", [s], ["side_mean"], axes=[1, 2, 3], keepdims=0))
        inits.append(helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]))
        nodes.append(helper.make_node("Mul", ["side_mean", "zero"], ["side0"]))
        inits.append(helper.make_tensor("axes", TensorProto.INT64, [1], [1]))
        nodes.append(helper.make_node("Unsqueeze", ["side0", "axes"], ["side1"]))
        nodes.append(helper.make_node("Add", [out, "side1"], ["logits_b"]))
        out = "logits_b"
    nodes.append(helper.make_node("Identity", [out], ["class"]))
    graph = helper.make_graph(nodes, "gate_trials", [helper.make_tensor_value_info(
        "image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])], [helper.make_tensor_value_info(
            "class", TensorProto.FLOAT, ["N", 10])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path, macs[0]


def models(tmp: Path, targets=(0.05, 0.10, 0.17)) -> tuple[Path, dict[float, tuple[Path, float]]]:
    """A, and per target the B whose extra multiply-adds come nearest it: {target: (path, extra work)}."""
    a, base = make_model(tmp / "a.onnx")
    out = {}
    for t in targets:
        best = None
        for k in range(1, 20):
            p, macs = make_model(tmp / f"b{k}.onnx", k)
            extra = macs / base - 1
            if best is None or abs(extra - t) < abs(best[1] - t):
                best = (p, extra)
        out[t] = best
    return a, out


def true_slowdown(a: Path, b: Path, rounds: int = 9) -> float:
    """B's cost relative to A: interleaved InferenceSession.run loops, median of paired ratios."""
    import onnxruntime as ort

    x = np.random.default_rng(0).random((BATCH, 3, SIZE, SIZE), dtype=np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sa, sb = (ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for p in (a, b))

    def t(s):
        for _ in range(3):
            s.run(None, {"image": x})
        t0 = time.perf_counter()
        for _ in range(15):
            s.run(None, {"image": x})
        return time.perf_counter() - t0

    return statistics.median(t(sb) / t(sa) for _ in range(rounds)) - 1


class Busy:
    """A process spinning on one core for as long as it lives."""

    def __enter__(self):
        self.p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        return self

    def __exit__(self, *exc):
        self.p.kill()
        self.p.wait()


class Trial:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.suite = tmp / "suite" / "suite.yaml"
        self.suite.parent.mkdir(parents=True, exist_ok=True)
        self.cache = tmp / "cache"

    def point(self, onnx: Path, timing: str = "") -> None:
        fields = ", ".join(x for x in (TIMING[0], timing) if x)
        self.suite.write_text(SUITE.format(onnx=onnx, size=SIZE, bs=BATCH,
                                           timing=f"timing: {{{fields}}}\n" if fields else ""))

    def night(self, store: Path, onnx: Path, timing: str = "") -> str:
        """One real harness run of the throughput case; its run id."""
        self.point(onnx, timing)
        s = HarnessSession(store=store, cache=self.cache, argv=[str(self.suite)])
        for case in build_plan(read_suite(self.suite)):
            if case.stage == "throughput":
                s.execute(case)
        rid = s.run_id
        s.finish()
        return rid

    def remeasure_gate(self, store: Path, budget: float) -> tuple[int, str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HARNESS_REMEASURE_ARGS": f"--cache {self.cache}"}
        p = subprocess.run([sys.executable, "-m", "harness", "gate", "--store", str(store), "--metric",
                            "throughput_ips", f"--remeasure={budget:g}"], cwd=self.tmp, env=env,
                           capture_output=True, text=True, timeout=budget + 120)
        return p.returncode, p.stdout


def label(code: int, text_or_comparison) -> str:
    """The verdict, with IMPROVEMENT (exit 0, but not a pass within the threshold) told apart."""
    c = text_or_comparison
    improved = (c.verdict == "improvement") if hasattr(c, "verdict") else ("IMPROVEMENT" in (c or ""))
    return "IMPROVEMENT" if code == ExitCode.OK and improved else VERDICT[code]


def judge(store: Path, runs: list[str] | None = None) -> tuple[int, object]:
    """The gate's verdict on the newest run, over the whole store or a subset of its runs."""
    h = load_history([store])
    if runs is not None:
        h = History({r: h.runs[r] for r in runs}, [x for x in h.results if x.run_id in runs], h.paths)
    out = evaluate(h, metrics=["throughput_ips"])
    return out.exit_code, (out.comparisons[0] if out.comparisons else None)


def ci(k: int, n: int) -> str:
    from scipy.stats import binomtest

    if n == 0:
        return "n=0"
    lo, hi = binomtest(k, n).proportion_ci(0.95)
    return f"{k}/{n} [{lo:.2f}, {hi:.2f}]"


def coverage(stores: list[Path]) -> None:
    """Coverage of the printed run interval, and of the calibrated one, over every clean A run."""
    runs = []
    for s in stores:
        h = load_history([s])
        for r in h.results:
            m = r.metrics
            if r.stage == "throughput" and not m.get("contended") and r.artifact_sha256 == A_SHA[0]:
                runs.append(run_estimate(m["throughput_ips"], m["throughput_ci_lo"], m["throughput_ci_hi"],
                                         sum(1 for x in m["repetitions"] if x.get("used")), m.get("ci_method")))
    if len(runs) < 3:
        print(f"coverage: only {len(runs)} clean A runs")
        return
    med = statistics.median(r.value for r in runs)
    inside = sum(math.exp(math.log(r.value) - Z95 * r.se) <= med <= math.exp(math.log(r.value) + Z95 * r.se)
                 for r in runs)
    cal = 0
    for i, r in enumerate(runs):
        others = runs[:i] + runs[i + 1:]
        tau2, _ = between_run([others])
        h = Z95 * math.sqrt(tau2 + r.se ** 2)
        cal += math.exp(math.log(r.value) - h) <= med <= math.exp(math.log(r.value) + h)
    hw = statistics.median(math.expm1(Z95 * r.se) for r in runs)
    sd = statistics.stdev(math.log(r.value) for r in runs)
    print(f"coverage over {len(runs)} clean A runs of one key (median {med:.1f} img/s, run-to-run sd {sd:.1%}, "
          f"median within-run half-width {hw:.1%}):\n  printed within-run 95% interval contains the median: "
          f"{ci(inside, len(runs))}\n  calibrated (with the between-run spread of the other runs): "
          f"{ci(cal, len(runs))}")


A_SHA: list[str] = [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--remeasure", type=float, default=25.0, help="gate --remeasure budget, seconds")
    ap.add_argument("--keep", help="keep the stores in this folder")
    ap.add_argument("--contention-threshold", type=float,
                    help="the probe's threshold for every run (default: the harness's own, 0.05)")
    args = ap.parse_args()
    if args.contention_threshold is not None:
        TIMING[0] = f"contention_threshold: {args.contention_threshold}"
    counts: dict[str, list[str]] = defaultdict(list)
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(args.keep) if args.keep else Path(d)
        tmp.mkdir(parents=True, exist_ok=True)
        a, bs = models(tmp)
        print(f"contention threshold: {args.contention_threshold or 'the default (0.05)'}; "
              f"gate --remeasure budget {args.remeasure:g} s")
        print(f"host: {os.cpu_count()} cores; loadavg {open('/proc/loadavg').read().split()[:3]}; "
              f"{SIZE}x{SIZE} CNN, batch {BATCH}, ONNX Runtime CPU, 1 intra-op thread")
        for t, (p, extra) in bs.items():
            print(f"B{round(t * 100)}: +{extra:.1%} work (multiply-adds); slowdown measured by interleaved "
                  f"session.run: {true_slowdown(a, p):+.1%}", flush=True)
        stores = []
        for k in range(args.trials):
            tr = Trial(tmp / f"trial{k}")
            s, s3 = tr.tmp / "s.sqlite", tr.tmp / "s3.sqlite"
            load = open("/proc/loadavg").read().split()[0]
            t0 = time.monotonic()
            a_ids = [tr.night(s, a) for _ in range(3)]
            if k == 0:
                A_SHA[0] = load_history([s]).results[0].artifact_sha256
            shutil.copy(s, s3)
            with Busy():
                a4 = tr.night(s, a)
            counts["A/A beside a busy core, plain gate"].append(label(*judge(s)))
            counts["A/A beside a busy core, then gate --remeasure (neighbour stopped)"].append(
                label(*tr.remeasure_gate(s, args.remeasure)))
            aa_clean = [r.run_id for r in load_history([s]).results
                        if r.stage == "throughput" and not r.metrics.get("contended")]
            b17 = tr.night(s, bs[0.17][0])
            counts["B17 after 3 A + busy A (+ its remeasure runs), plain gate"].append(label(*judge(s)))
            counts["B17 after 3 A + busy A, gate --remeasure"].append(label(*tr.remeasure_gate(s, args.remeasure)))
            # the derived cells: the same measurements, the history as of fewer runs
            counts["history 1: A1 -> B17, plain"].append(label(*judge(s, [a_ids[0], b17])))
            counts["history 1: A/A A1 -> A2, plain"].append(label(*judge(s, a_ids[:2])))
            counts["history 3: A1..A3 -> B17, plain"].append(label(*judge(s, [*a_ids, b17])))
            clean_a = [r for r in aa_clean if r != a4]
            if len(clean_a) >= 6:
                counts["history 6: 6 clean A -> B17, plain"].append(label(*judge(s, [*clean_a[:6], b17])))
            if len(clean_a) >= 4:
                counts["history 3: A/A A1..A3 -> a remeasured A, plain"].append(
                    label(*judge(s, [*a_ids, clean_a[3]])))
            b10 = tr.night(s3, bs[0.10][0])
            counts["B10 after 3 A, plain gate"].append(label(*judge(s3)))
            counts["B10 after 3 A, gate --remeasure"].append(label(*tr.remeasure_gate(s3, args.remeasure)))
            bi = tr.night(s3, bs[0.17][0], IMPRECISE)
            counts["B17 imprecise (2 short reps) after 3 A, plain"].append(label(*judge(s3, [*a_ids, bi])))
            b5 = tr.night(s3, bs[0.05][0])
            counts["B5 after 3 A, plain"].append(label(*judge(s3, [*a_ids, b5])))
            stores += [s, s3]
            del b10
            print(f"trial {k}: loadavg {load} -> {open('/proc/loadavg').read().split()[0]}, "
                  f"{time.monotonic() - t0:.0f} s; " + "; ".join(f"[{i}] {v[-1]}" for i, v in
                                                                enumerate(counts.values()) if v), flush=True)
        print(f"\n{args.trials} trials, {time.monotonic() - t_start:.0f} s; verdicts per cell "
              "(count [95% Clopper-Pearson interval]):")
        for i, (name, vs) in enumerate(counts.items()):
            n = len(vs)
            print(f"  [{i}] {name}: " + ", ".join(f"{v} {ci(vs.count(v), n)}" for v in
                                            ("REGRESSION", "PASS", "IMPROVEMENT", "INCONCLUSIVE", "NOTHING") if v in vs))
        coverage(stores)
        print(f"loadavg at the end: {open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
