"""What a user sees: `harness run` with and without a terminal, `harness show`, the efficiency columns."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from harness.metrics.efficiency import count_ops, efficiency, host_peak

REPO = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
CONV_MACS = 8 * 3 * 3 * 3 * 32 * 32  # Conv 3->8, 3x3, same padding, 32x32 output
GEMM_MACS = 8 * 3


def conv_classifier(path: Path) -> Path:
    """Conv(3->8, 3x3, pad 1) -> GlobalAveragePool -> Flatten -> Gemm(8->3): known multiply-accumulates."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((3, 8)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Conv", ["image", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "fc"], ["class"], transB=1)]
    graph = helper.make_graph(nodes, "conv_classifier",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32])],
                              [helper.make_tensor_value_info("class", TensorProto.FLOAT, ["N", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def project(tmp_path):
    conv_classifier(tmp_path / "toy.onnx")
    (tmp_path / "suites" / "toy").mkdir(parents=True)
    (tmp_path / "suites" / "toy" / "suite.yaml").write_text(textwrap.dedent("""\
        schema_version: 1
        model: toy
        source: {kind: onnx, path: ../../toy.onnx, num_classes: 3}
        input: {size: 32, preprocess: imagenet_resize256_crop224}
        export: [onnx]
        timing: {warmup: 1, min_iterations: 3, min_duration_s: 0.1}
        targets:
          - {name: cpu-ort, device: cpu, runner: onnxruntime, format: onnx, batch_sizes: [1, 2], stages: [throughput]}
          - {name: npu, device: ascend310p, runner: ais_bench, format: om, batch_sizes: [1, 2], stages: [throughput]}
        """))
    return tmp_path


def _env(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HARNESS_CACHE": str(tmp_path / "cache"), "COLUMNS": "100",
           "TERM": "xterm-256color"}
    env.pop("PYTEST_ADDOPTS", None)
    return env


def _harness(args, cwd, tty: bool, timeout: int = 300) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "harness", *args]
    if not tty:
        p = subprocess.run(cmd, cwd=cwd, env=_env(cwd), capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout + p.stderr
    master, slave = pty.openpty()
    os.set_blocking(master, True)
    import fcntl
    import struct
    import termios
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    p = subprocess.Popen(cmd, cwd=cwd, env=_env(cwd), stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        r, _, _ = select.select([master], [], [], timeout)
        if not r:
            p.kill()
            raise AssertionError("harness run under a pty timed out:\n" + b"".join(chunks).decode(errors="replace"))
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return p.wait(timeout=30), b"".join(chunks).decode("utf-8", errors="replace")


def test_harness_run_without_a_terminal_prints_plain_lines_and_the_table(project):
    store = project / "r.sqlite"
    rc, out = _harness(["run", "suites", "--store", str(store)], project, tty=False)
    assert rc == 0, out
    assert not ANSI.search(out), "escape codes in a CI log"
    # one plain line per finished case with its headline figure
    done = re.findall(r"^\[(\d)/5\] toy (\S+) (\w+) \([\d.]+ s\): (.*)$", out, re.M)
    assert [(n, case, status) for n, case, status, _ in done] == [
        ("1", "export[onnx]", "passed"), ("2", "throughput[cpu-ort-bs1]", "passed"),
        ("3", "throughput[cpu-ort-bs2]", "passed"), ("4", "throughput[npu-bs1]", "skipped"),
        ("5", "throughput[npu-bs2]", "skipped")], out
    assert "4 passed" not in out and "3 passed, 2 skipped in" in out  # pytest's count, once per case
    assert re.match(r"[\d.]+ ± [\d.]+ \S* ?img/s, p50 [\d.]+ ms", done[1][3]), done[1][3]
    # the table: plain ASCII rules, the efficiency columns, skipped families grouped with their reason
    assert re.search(r"^target\s+\|\s+bs \|\s+img/s ± 95% CI \|.*GFLOP/s \|\s+peak \|", out, re.M), out
    row = re.search(r"^cpu-ort\s+\|\s+2 \|\s+([\d.]+) ± ([\d.]+)[ C~!]*\|.*\|\s+([\d.]+) \|\s+([\d.]+)% \|", out, re.M)
    assert row, out
    assert re.search(r"^  Ascend 310P: 2 skipped \(throughput 2\): no Ascend 310P", out, re.M), out
    assert "." * 4 not in out  # pytest's dots are replaced by the progress lines
    assert max(len(line) for line in out.splitlines()) <= 100

    # harness show prints the same table for the stored run
    rc, shown = _harness(["show", "--store", str(store)], project, tty=False)
    assert rc == 0, shown
    table = out[out.index("toy: "):out.index("skipped:")]
    assert table.strip() in shown, shown

    # the efficiency figures: in the store, the HTML report and the CSV export
    import json
    import sqlite3
    recs = [json.loads(r[0]) for r in sqlite3.connect(store).execute("SELECT record FROM results")]
    [m] = [r["metrics"] for r in recs if r["case"] == "throughput[cpu-ort-bs2]"]
    # the CPU's peak is its ISA ceiling (issue 23); the measured GEMM stands beside it
    assert m["macs_per_image"] == CONV_MACS + GEMM_MACS and m["peak_kind"] == "isa_ceiling"
    assert m["gemm_fraction"] == pytest.approx(m["gflop_s"] / m["gemm_gflop_s"])
    assert m["gemm_source"].startswith("float32 GEMM") and m["peak_fraction"] < 1
    assert m["gflop_s"] == pytest.approx(m["throughput_ips"] * 2 * (CONV_MACS + GEMM_MACS) / 1e9)
    assert m["peak_fraction"] == pytest.approx(m["gflop_s"] / m["peak_gflop_s"])
    assert float(row.group(3)) == pytest.approx(m["gflop_s"], abs=0.051)
    assert float(row.group(4)) == pytest.approx(100 * m["peak_fraction"], abs=0.051)
    rc, _ = _harness(["report", "--store", str(store), "--out", str(project / "r.html")], project, tty=False)
    html = (project / "r.html").read_text()
    assert rc == 0 and "GFLOP/s (peak)" in html and f"{m['gflop_s']:.1f} ({100 * m['peak_fraction']:.1f}%)" in html
    rc, _ = _harness(["export", "--store", str(store), "--format", "csv", "--out", str(project / "r.csv")],
                     project, tty=False)
    import csv
    rows = list(csv.DictReader((project / "r.csv").open()))
    [r2] = [r for r in rows if r["case"] == "throughput[cpu-ort-bs2]"]
    assert rc == 0 and float(r2["peak_fraction"]) == pytest.approx(m["peak_fraction"])
    assert float(r2["gflop_s"]) == pytest.approx(m["gflop_s"]) and r2["peak_source"].startswith("ISA ceiling")


def test_harness_run_on_a_terminal_shows_progress_and_draws_the_table(project):
    store = project / "r.sqlite"
    rc, out = _harness(["run", "suites", "--store", str(store)], project, tty=True)
    assert rc == 0, out
    text = ANSI.sub("", out).replace("\r", "\n")
    # the live line: done, left, ETA (from the plan: the store had no history)
    assert re.search(r"0 done, 5 left, ETA \d+:\d\d \(from plan\)", text), text
    assert re.search(r"\d done, \d left, ETA \d+:\d\d \(from plan\), elapsed \d+:\d\d \| toy throughput\[", text)
    assert "\x1b[" in out  # styled
    assert "─" in text and "img/s ± 95% CI" in text and "GFLOP/s" in text
    assert re.search(r"Ascend 310P: 2 skipped \(throughput 2\): no Ascend 310P", text)
    # a second run learns its ETA from the first run's wall times
    rc, out2 = _harness(["run", "suites", "--store", str(store)], project, tty=True)
    assert rc == 0, out2
    assert "(from history)" in ANSI.sub("", out2)


def test_unknown_run_is_one_clear_error(project):
    rc, out = _harness(["show", "nope", "--store", str(project / "missing.sqlite")], project, tty=False)
    assert rc == 3 and "results store not found" in out and "Traceback" not in out


def test_op_count_of_a_known_graph(tmp_path):
    path = conv_classifier(tmp_path / "toy.onnx")
    with pytest.raises(ValueError, match="image"):  # a dynamic batch needs a shape
        count_ops(path)
    ops = count_ops(path, input_shape=(2, 3, 32, 32))
    assert ops["macs_per_image"] == CONV_MACS + GEMM_MACS
    assert ops["gflop_per_image"] == pytest.approx(2 * (CONV_MACS + GEMM_MACS) / 1e9)


def test_peak_is_measured_once_per_machine_and_cached(tmp_path):
    calls = []

    def fake_measure():
        calls.append(1)
        return ({"gflop_s": 100.0, "n": 64, "intra_op_threads": 2}, {"gflop_s": 50.0, "n": 64, "threads": 2})

    a = host_peak(tmp_path, cpu_model="X", measure=fake_measure)
    b = host_peak(tmp_path, cpu_model="X", measure=fake_measure)
    assert calls == [1] and a == b and a["peak_gflop_s"] == 100.0 and a["peak_kind"] == "measured"
    assert "ONNX Runtime MatMul 100.0 GFLOP/s (2 threads), numpy 50.0 GFLOP/s (2 threads)" in a["peak_source"]
    host_peak(tmp_path, cpu_model="Y", measure=fake_measure)  # another machine: measured again
    assert calls == [1, 1]
    e = efficiency(20.0, {"gflop_per_image": 2.0}, a)
    assert e["gflop_s"] == 40.0 and e["peak_fraction"] == 0.4


@pytest.mark.parametrize("content", ['{"peak_gflop_s": 0, "peak_kind": "measured", "peak_source": "x"}',
                                     '{"peak_gflop_s": -5.0, "peak_kind": "measured", "peak_source": "x"}',
                                     '{"peak_gflop_s": NaN, "peak_kind": "measured", "peak_source": "x"}',
                                     '{"peak_gflop_s": "fast", "peak_kind": "measured"}', '[1, 2]', '{"peak_gfl'])
def test_a_cached_peak_that_cannot_be_right_is_measured_again_with_a_note(tmp_path, content):
    calls = []

    def fake_measure():
        calls.append(1)
        return ({"gflop_s": 80.0, "n": 64, "intra_op_threads": 2}, {"gflop_s": 40.0, "n": 64, "threads": 2})

    host_peak(tmp_path, cpu_model="X", measure=fake_measure)
    (path,) = (tmp_path / "peak").glob("*.json")
    path.write_text(content)  # zero, negative, NaN, malformed, not an object, cut short
    again = host_peak(tmp_path, cpu_model="X", measure=fake_measure)
    assert calls == [1, 1] and again["peak_gflop_s"] == 80.0
    assert f"measured again: the cached peak {path} was" in again["peak_source"]
    assert efficiency(20.0, {"gflop_per_image": 2.0}, again)["peak_fraction"] == 0.5  # no ZeroDivisionError
    assert host_peak(tmp_path, cpu_model="X", measure=fake_measure) == again and calls == [1, 1]  # replaced


def test_a_peak_measured_on_a_busy_host_is_measured_again(tmp_path):
    from harness.metrics.interference import Interference

    busy = iter([0.40, 0.30, 0.0, 0.30])  # others' share of the machine during each measurement

    class Probe:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.result = Interference(wall_s=1.0, ncpu=2, own_cpu_s=1.0, others_cpu_share=next(busy))

    gflops = iter([60.0, 50.0, 100.0, 40.0])

    def measure():
        g = next(gflops)
        return ({"gflop_s": g, "n": 64, "intra_op_threads": 2}, {"gflop_s": g / 2, "n": 64, "threads": 2})

    first = host_peak(tmp_path, cpu_model="X", measure=measure, probe_factory=Probe)
    assert first["peak_gflop_s"] == 60.0 and first["contended"] and "other processes used 40%" in first["peak_source"]
    # still busy and slower: the higher contended figure stays, and is tried again next time
    assert host_peak(tmp_path, cpu_model="X", measure=measure, probe_factory=Probe)["peak_gflop_s"] == 60.0
    clean = host_peak(tmp_path, cpu_model="X", measure=measure, probe_factory=Probe)
    assert clean["peak_gflop_s"] == 100.0 and not clean["contended"]
    # a clean peak is kept: no fourth measurement
    assert host_peak(tmp_path, cpu_model="X", measure=measure, probe_factory=Probe) == clean
    assert next(gflops) == 40.0


def test_skips_that_differ_only_by_the_model_are_one_line():
    from harness.reports.terminal import render
    from harness.results.record import Result

    def skipped(model, reason, stage="accuracy"):
        return Result(model=model, case=f"{stage}[cpu-bs1]", stage=stage, status="skipped", device="cpu",
                      reason=reason)

    why = ("no trained weights: set source.checkpoint in suites/{m}/suite.yaml to check against "
           "{m}.top1.ascend910.eval_log")
    results = [skipped(m, why.format(m=m)) for m in ("efficientnet_b0", "se_resnext50", "xception")]
    results.append(skipped("xception", "dataset is synthetic", stage="accuracy"))
    text = render(results, terminal=False)
    section = " ".join(text[text.index("skipped:"):].split())  # rich folds long lines at 100 columns
    assert section == (
        "skipped: CPU: 3 skipped (accuracy 3): no trained weights: set source.checkpoint in suites/<model>/suite.yaml"
        " to check against <model>.top1.ascend910.eval_log [<model>: efficientnet_b0, se_resnext50, xception]"
        " CPU: 1 skipped (accuracy 1): dataset is synthetic"), text
    assert all(len(line) <= 100 for line in text.splitlines())
