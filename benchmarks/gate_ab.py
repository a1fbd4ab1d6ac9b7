"""A/A and A/B trials of the nightly gate on this host, through the harness itself.

Every "night" is a real harness run: a HarnessSession measures the suite's
throughput case (ONNX Runtime, a small CNN made here), stores it, and the
gate (harness.analysis.regression.evaluate) judges the newest run against
the store's history, exactly as `harness run` + `harness gate` would.

- A/A: one model measured N times in a row; half of the nights beside a
  background process that keeps one core busy for random stretches. Prints
  the false-regression count (target 0 of N), how many results were flagged
  contended, and the calibration: the share of clean runs whose 95% interval
  contains the median of all clean runs (target >= 90%).
- A/B: a history of A nights, then the next version of the same benchmark key
  is B: the same model with an added side computation worth +x% of the work
  (a new ONNX file, so a new artifact sha256). Each trial gates one B night
  (a copy of the A history + B) and, interleaved, one more A night (the
  control). Prints the detection rate per size, the smallest size detected
  reliably (>= 9 of 10), the suspects named, and the true slowdown of each
  B measured directly (interleaved session.run loops in this process).

    python benchmarks/gate_ab.py                    # A/A N=12, A/B 10 trials at +10%
    python benchmarks/gate_ab.py --sizes 0.02 0.05 0.10 0.20 --trials 10
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.analysis.regression import evaluate  # noqa: E402
from harness.errors import ExitCode  # noqa: E402
from harness.plan import read_suite  # noqa: E402
from harness.results.history import load_history  # noqa: E402
from harness.session import HarnessSession  # noqa: E402
from harness.stages import build_plan  # noqa: E402

SIZE, BATCH = 64, 8


def make_model(path: Path, side_convs: int = 0) -> Path:
    """A small CNN; with side_convs > 0 a side branch of that many 64->64 3x3
    convolutions at 16x16 whose result is added to the logits x 0."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def conv(name, x, cin, cout, stride=1):
        w = rng.normal(0, (2.0 / (cin * 9)) ** 0.5, (cout, cin, 3, 3)).astype(np.float32)
        inits.append(helper.make_tensor(f"{name}_w", TensorProto.FLOAT, w.shape, w.flatten().tolist()))
        nodes.append(helper.make_node("Conv", [x, f"{name}_w"], [f"{name}_c"], pads=[1, 1, 1, 1],
                                      strides=[stride, stride]))
        nodes.append(helper.make_node("Relu", [f"{name}_c"], [name]))
        return name

    x = conv("c1", "image", 3, 32, 2)  # 32x32
    x = conv("c2", x, 32, 64)
    x = conv("c3", x, 64, 64)
    x = conv("c4", x, 64, 128, 2)  # 16x16
    x = conv("c5", x, 128, 128)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1))
    fc = rng.normal(0, 0.1, (128, 10)).astype(np.float32)
    inits.append(helper.make_tensor("fc", TensorProto.FLOAT, fc.shape, fc.flatten().tolist()))
    nodes.append(helper.make_node("MatMul", ["flat", "fc"], ["logits"]))
    out = "logits"
    if side_convs > 0:
        # side trunk at 16x16 on a strided copy of c3
        k = side_convs
        s = conv("s0", "c3", 64, 64, 2)
        for i in range(1, k):
            s = conv(f"s{i}", s, 64, 64)
        nodes.append(helper.make_node("ReduceMean", [s], ["side_mean"], axes=[1, 2, 3], keepdims=0))
        zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
        inits.append(zero)
        nodes.append(helper.make_node("Mul", ["side_mean", "zero"], ["side0"]))
        nodes.append(helper.make_node("Unsqueeze", ["side0", "axes"], ["side1"]))
        inits.append(helper.make_tensor("axes", TensorProto.INT64, [1], [1]))
        nodes.append(helper.make_node("Add", [out, "side1"], ["logits_b"]))
        out = "logits_b"
    nodes.append(helper.make_node("Identity", [out], ["class"]))
    graph = helper.make_graph(nodes, "gate_bench", [helper.make_tensor_value_info(
        "image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])], [helper.make_tensor_value_info(
            "class", TensorProto.FLOAT, ["N", 10])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


SUITE = """\
model: gate_bench
source: {{kind: onnx, path: {onnx}, num_classes: 10}}
input: {{size: {size}, preprocess: imagenet_resize256_crop224}}
targets:
  - {{name: ort, device: cpu, runner: onnxruntime, format: onnx, batch_sizes: [{bs}], stages: [throughput]}}
"""


def night(store: Path, suite_dir: Path, onnx: Path) -> str:
    """One real harness run of the throughput case; returns its run id."""
    (suite_dir / "suite.yaml").write_text(SUITE.format(onnx=onnx, size=SIZE, bs=BATCH))
    suite = read_suite(suite_dir / "suite.yaml")
    s = HarnessSession(store=store, cache=suite_dir / "cache", argv=["gate_ab"])
    for case in build_plan(suite):
        s.execute(case)
    rid = s.run_id
    s.finish()
    return rid


def judge(store: Path) -> tuple[int, str, dict]:
    out = evaluate(load_history([store]), metrics=["throughput_ips"])
    c = out.comparisons[0] if out.comparisons else None
    return out.exit_code, (c.reason if c else "; ".join(out.missing_baseline + out.inconclusive)), \
        (c.__dict__ if c else {})


class BusyCore:
    """A background process keeping one core busy for random stretches (0.2-1.5 s on, 0.2-1.5 s off)."""

    CODE = textwrap.dedent("""
        import random, time
        rng = random.Random(int(time.time()))
        while True:
            end = time.monotonic() + rng.uniform(0.2, 1.5)
            while time.monotonic() < end:
                pass
            time.sleep(rng.uniform(0.2, 1.5))
        """)

    def __enter__(self):
        self.p = subprocess.Popen([sys.executable, "-c", self.CODE])
        return self

    def __exit__(self, *exc):
        self.p.kill()
        self.p.wait()


def last_result(store: Path):
    h = load_history([store])
    return [r for r in h.results if r.stage == "throughput"][-1]


def aa(tmp: Path, onnx: Path, n: int) -> None:
    store, suite_dir = tmp / "aa.sqlite", tmp / "suite"
    suite_dir.mkdir(exist_ok=True)
    busy_nights = set(random.Random(1).sample(range(n), n // 2))
    rows, false_reg, inconclusive = [], 0, 0
    for i in range(n):
        if i in busy_nights:
            with BusyCore():
                night(store, suite_dir, onnx)
        else:
            night(store, suite_dir, onnx)
        r = last_result(store)
        code, reason, _ = judge(store) if i else (ExitCode.OK, "first night: nothing to compare", {})
        false_reg += code == ExitCode.FAILED
        inconclusive += code == ExitCode.INCONCLUSIVE
        m = r.metrics
        rows.append((i, i in busy_nights, m["throughput_ips"], m["throughput_ci_lo"], m["throughput_ci_hi"],
                     m["contended"], m["n_contended"], len(m["repetitions"]), code, reason))
        print(f"  night {i:2d} {'busy ' if i in busy_nights else 'quiet'} {m['throughput_ips']:8.1f} "
              f"[{m['throughput_ci_lo']:7.1f}, {m['throughput_ci_hi']:7.1f}] "
              f"reps {len(m['repetitions']):2d} contended-reps {m['n_contended']:2d} "
              f"{'CONTENDED ' if m['contended'] else ''}gate {ExitCode(code).name}", flush=True)
    clean = [row for row in rows if not row[5]]
    med = statistics.median(row[2] for row in clean) if clean else float("nan")
    covered = sum(lo <= med <= hi for _, _, _, lo, hi, *_ in clean)
    print(f"A/A: {n} nights ({len(busy_nights)} beside a busy core): false regressions {false_reg} of {n - 1} "
          f"judged nights; results flagged contended: {sum(r[5] for r in rows)} "
          f"({sum(r[5] for r in rows if r[1])} of them on busy nights); gate inconclusive: {inconclusive}")
    print(f"A/A calibration: {covered} of {len(clean)} clean runs' 95% intervals contain the median of all clean "
          f"runs ({med:.1f} img/s): {covered / max(len(clean), 1):.0%} (target >= 90%)")
    spread = [row[2] for row in clean]
    if len(spread) > 1:
        print(f"A/A run-to-run: clean medians {min(spread):.1f}-{max(spread):.1f} img/s "
              f"(max/min {max(spread) / min(spread):.3f}); median interval half-width "
              f"{statistics.median((row[4] - row[3]) / 2 / row[2] for row in clean):.2%}")


def true_slowdown(a: Path, b: Path, rounds: int = 15) -> float:
    """B's cost relative to A, measured directly: interleaved session.run loops, median of paired ratios."""
    import onnxruntime as ort

    x = np.random.default_rng(0).random((BATCH, 3, SIZE, SIZE), dtype=np.float32)
    sa, sb = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (a, b))

    def t(s):
        for _ in range(3):
            s.run(None, {"image": x})
        t0 = time.perf_counter()
        for _ in range(20):
            s.run(None, {"image": x})
        return time.perf_counter() - t0

    return statistics.median(t(sb) / t(sa) for _ in range(rounds)) - 1


def calibrated(tmp: Path, a_onnx: Path, target: float) -> tuple[Path, float]:
    """The B model whose measured slowdown first reaches `target` (side convolutions added one by one)."""
    for k in range(1, 64):
        b = make_model(tmp / f"b_{target:.2f}_{k}.onnx", k)
        truth = true_slowdown(a_onnx, b)
        if truth >= target:
            return b, truth
    return b, truth


def ab(tmp: Path, a_onnx: Path, sizes: list[float], trials: int, history: int) -> None:
    suite_dir = tmp / "suite"
    suite_dir.mkdir(exist_ok=True)
    base = tmp / "base.sqlite"
    for _ in range(history):
        night(base, suite_dir, a_onnx)
    print(f"A/B: base history of {history} A nights")
    for size in sizes:
        b_onnx, truth = calibrated(tmp, a_onnx, size)
        detected, control_fail, changes, suspects = 0, 0, [], set()
        for k in range(trials):
            for variant, model in (("B", b_onnx), ("A", a_onnx)):
                store = tmp / f"trial_{size}_{k}_{variant}.sqlite"
                shutil.copy(base, store)
                night(store, suite_dir, model)
                code, reason, c = judge(store)
                if not c:
                    print(f"    {variant} night not compared: {reason}")
                if variant == "B":
                    detected += code == ExitCode.FAILED
                    if c:
                        changes.append(c["change"])
                        suspects.update(c.get("suspects") or [])
                else:
                    control_fail += code == ExitCode.FAILED
                store.unlink()
        print(f"A/B B = A + side work aimed at +{size:.0%} (its slowdown by interleaved session.run: {truth:+.1%}): "
              f"detected "
              f"{detected} of {trials}; A controls failing {control_fail} of {trials}; measured change "
              f"median {statistics.median(changes) if changes else float('nan'):+.1%}; suspects named: {sorted(suspects) or 'none'}",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nights", type=int, default=12, help="A/A nights (default 12)")
    ap.add_argument("--sizes", type=float, nargs="*", default=[0.10], help="A/B side-work fractions")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--history", type=int, default=6, help="A nights before each B (default 6)")
    ap.add_argument("--skip-aa", action="store_true")
    ap.add_argument("--skip-ab", action="store_true")
    args = ap.parse_args()
    print(f"host: {os.cpu_count()} cores; model {SIZE}x{SIZE} CNN, batch {BATCH}, ONNX Runtime CPU")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        a_onnx = make_model(tmp / "a.onnx")
        t0 = time.perf_counter()
        if not args.skip_aa:
            aa(tmp, a_onnx, args.nights)
        if not args.skip_ab:
            ab(tmp, a_onnx, args.sizes, args.trials, args.history)
        print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
