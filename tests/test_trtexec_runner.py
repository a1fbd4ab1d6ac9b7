"""The trtexec runner: engine build and cache, the timed run read from the
per-inference trace, the skip where trtexec is absent.

There is no GPU or TensorRT here. `fake_trtexec` below is a hand-written test
double: a script named trtexec that writes an engine file when asked to build,
and for a timed run writes an --exportTimes trace (with the warm-up queries in
it, as releases up to 8.5 do) and prints an 8.6-style summary computed from
that trace, following sampleReporting.cpp (NVIDIA/TensorRT release/8.6, cited
in tests/fixtures/trtexec/README.md). Its numbers are chosen by hand; none is
a measurement.
"""

from __future__ import annotations

import contextlib

import json
import os
import stat
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, color_classifier, run_pytest
from harness.errors import CaseSkipped, UserError
from harness.metrics.timing import TimingConfig, measure
from harness.runners import get_runner_class
from harness.runners.trtexec import TrtexecRunner, read_times, version_from_text

FAKE = textwrap.dedent('''\
    #!{python}
    import json, os, pathlib, sys
    argv = sys.argv[1:]
    args = dict((a[2:].split("=", 1) + [True])[:2] for a in argv if a.startswith("--"))
    line = "trtexec " + " ".join(argv)
    tag = "[TensorRT v100300]"
    print(f"&&&& RUNNING TensorRT.trtexec {{tag}} # {{line}}")
    if "help" in args:
        sys.exit(0)
    with open(os.environ["FAKE_TRTEXEC_CALLS"], "a") as fh:
        fh.write(line + "\\n")
    if "saveEngine" in args:
        pathlib.Path(args["saveEngine"]).write_bytes(b"engine of " + args["onnx"].encode())
        print(f"&&&& PASSED TensorRT.trtexec {{tag}} # {{line}}")
        sys.exit(0)
    warm = float(args["warmUp"])
    compute = [float(x) for x in os.environ["FAKE_COMPUTE_MS"].split(",")]
    printed_mean = float(os.environ.get("FAKE_PRINTED_MEAN", sum(compute) / len(compute)))

    def row(t, c):
        return {{"startEnqMs": t, "endEnqMs": t + 0.01, "startH2dMs": t, "endH2dMs": t + 0.05,
                 "startComputeMs": t + 0.05, "endComputeMs": t + 0.05 + c, "startD2hMs": t + 0.05 + c,
                 "endD2hMs": t + 0.07 + c, "h2dMs": 0.05, "computeMs": c, "d2hMs": 0.02,
                 "latencyMs": c + 0.07, "endToEndMs": c + 0.07}}

    trace, t = [], 0.0
    while t < warm:                       # warm-up queries: slow, and exported too
        trace.append(row(t, 40.0))
        t += 41.0
    nwarm, start = len(trace), t
    for c in compute:
        trace.append(row(t, c))
        t += c + 0.1
    json.dump(trace, open(args["exportTimes"], "w"))
    s = sorted(compute)
    stats = (f"min = {{s[0]:g}} ms, max = {{s[-1]:g}} ms, mean = {{printed_mean:g}} ms, median = {{s[len(s) // 2]:g}} ms, "
             f"percentile(90%) = {{s[-1]:g}} ms, percentile(95%) = {{s[-1]:g}} ms, percentile(99%) = {{s[-1]:g}} ms")
    wall = (t - start) / 1000
    for msg in ("=== Device Information ===", "Selected Device: Tesla T4",
                f"Warmup completed {{nwarm}} queries over {{warm:g}} ms",
                f"Timing trace has {{len(compute)}} queries over {{wall:g}} s", "",
                "=== Performance summary ===", f"Throughput: {{len(compute) / wall:g}} qps",
                "Latency: " + stats, "Enqueue Time: " + stats,
                "H2D Latency: min = 0.05 ms, max = 0.05 ms, mean = 0.05 ms, median = 0.05 ms, percentile(90%) = 0.05 ms, "
                "percentile(95%) = 0.05 ms, percentile(99%) = 0.05 ms",
                "GPU Compute Time: " + stats,
                "D2H Latency: min = 0.02 ms, max = 0.02 ms, mean = 0.02 ms, median = 0.02 ms, percentile(90%) = 0.02 ms, "
                "percentile(95%) = 0.02 ms, percentile(99%) = 0.02 ms",
                f"Total Host Walltime: {{wall:g}} s", f"Total GPU Compute Time: {{sum(compute) / 1000:g}} s"):
        print("[11/23/2026-10:00:00] [I] " + msg)
    print(f"&&&& PASSED TensorRT.trtexec {{tag}} # {{line}}")
''')

COMPUTE_MS = [4.0, 4.2, 3.8, 4.1, 3.9, 4.0, 4.4, 3.6]  # chosen by hand


@pytest.fixture
def fake_trtexec(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "trtexec"
    exe.write_text(FAKE.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_TRTEXEC_CALLS", str(calls))
    monkeypatch.setenv("FAKE_COMPUTE_MS", ",".join(map(str, COMPUTE_MS)))
    return calls


def static_classifier(path: Path, batch: int, size: int = 8) -> Path:
    """color_classifier with every input dim fixed, as MindSpore's exports are."""
    import onnx

    color_classifier(path, batch=batch)
    model = onnx.load(str(path))
    for d, v in zip(model.graph.input[0].type.tensor_type.shape.dim, (batch, 3, size, size)):
        d.dim_value = v
    onnx.save(model, str(path))
    return path


def _runner(tmp_path, precision="fp16", **opts):
    return TrtexecRunner("gpu", 0, precision, {"artifact_cache": str(tmp_path / "cache"), "warmup_ms": 200, **opts})


def test_registered_for_gpu_onnx_at_device_scope():
    cls = get_runner_class("trtexec")
    assert cls is TrtexecRunner and cls.formats == ("onnx",) and cls.timing_scope == "device"
    assert cls.devices == ("gpu",)


def test_absent_trtexec_names_it_and_where_it_comes_from(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    why = TrtexecRunner.unavailable({})
    assert "trtexec not found" in why and "TensorRT" in why and "nvcr.io/nvidia/tensorrt" in why
    with pytest.raises(CaseSkipped, match="trtexec not found"):
        _runner(tmp_path).load(static_classifier(tmp_path / "m.onnx", 4), (4, 3, 8, 8))


def test_suite_cases_skip_naming_trtexec(tmp_path):
    env = {**os.environ, "HARNESS_STORE": str(tmp_path / "s.sqlite"), "HARNESS_CACHE": str(tmp_path / "c"),
           "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    p = run_pytest(["suites/se_resnext50", "-m", "gpu", "-k", "trtexec", "-rs", "-q", "-p", "no:cacheprovider"],
                   cwd=REPO, env=env)
    out = p.stdout + p.stderr
    assert "6 skipped" in out and "passed" not in out.split("skipped")[-1]
    assert "trtexec not found" in out and "nvcr.io/nvidia/tensorrt" in out


def test_engine_built_once_per_batch_and_cached(tmp_path, fake_trtexec):
    onnx = static_classifier(tmp_path / "m.onnx", 4)  # static batch: no shape flags
    r = _runner(tmp_path)
    r.load(onnx, (4, 3, 8, 8))
    m = r.extra_metrics()
    assert r.engine.is_file() and r.engine.suffix == ".plan" and m["engine_cached"] is False
    assert "--fp16" in m["artifact_command"] and "Shapes" not in m["artifact_command"]
    assert m["tensorrt_version"] == "10.3.0" and m["tensorrt_version_source"] == "trtexec --help"
    record = json.loads(Path(f"{r.engine.with_suffix('')}.trtexec.json").read_text())
    assert record["command"] == m["artifact_command"] and record["tensorrt_version"] == "10.3.0"
    assert r.version() == "TensorRT 10.3.0"
    r2 = _runner(tmp_path)
    r2.load(onnx, (4, 3, 8, 8))
    assert r2.extra_metrics()["engine_cached"] is True and r2.engine == r.engine
    assert r2.extra_metrics()["artifact_command"] == m["artifact_command"]
    builds = [c for c in fake_trtexec.read_text().splitlines() if "--saveEngine" in c]
    assert len(builds) == 1 and not list(r.engine.parent.glob("*.part"))
    # another precision is another engine
    r3 = _runner(tmp_path, precision="fp32")
    r3.load(onnx, (4, 3, 8, 8))
    assert r3.engine != r.engine and "--fp16" not in r3.extra_metrics()["artifact_command"]


def test_dynamic_batch_onnx_gets_one_profile_per_batch(tmp_path, fake_trtexec):
    onnx = color_classifier(tmp_path / "m.onnx")  # batch dim "N"
    r = _runner(tmp_path)
    r.load(onnx, (8, 3, 8, 8))
    cmd = r.extra_metrics()["artifact_command"]
    for flag in ("--minShapes=image:8x3x8x8", "--optShapes=image:8x3x8x8", "--maxShapes=image:8x3x8x8"):
        assert flag in cmd


def test_timed_run_is_1000_x_batch_over_gpu_compute_mean(tmp_path, fake_trtexec):
    onnx = static_classifier(tmp_path / "m.onnx", 4)
    r = _runner(tmp_path)
    r.load(onnx, (4, 3, 8, 8))
    timing = measure(r, np.zeros((4, 3, 8, 8), np.float32),
                     TimingConfig(warmup=2, min_iterations=8, min_duration_s=1.0, repetitions=1, max_repetitions=1),
                     probe_factory=contextlib.nullcontext)  # a quiet machine: no repetition redone
    mean = float(np.mean(COMPUTE_MS))
    assert timing.timing_scope == "device" and timing.iterations == len(COMPUTE_MS)  # warm-up left out
    assert timing.throughput_ips == pytest.approx(1000 * 4 / mean)
    assert timing.latency_ms_mean == pytest.approx(mean) and timing.latency_ms_max == pytest.approx(4.4)
    assert timing.warmup_iterations == 5 and timing.warmup_s == pytest.approx(0.2)
    m = r.extra_metrics()
    assert m["gpu_model"] == "Tesla T4" and m["h2d_latency_ms"]["mean"] == 0.05 and m["d2h_latency_ms"]["p99"] == 0.02
    assert m["trtexec"]["qps_counts"].startswith("inferences") and m["trtexec"]["trace_inferences"] == 8
    run = [c for c in fake_trtexec.read_text().splitlines() if "--loadEngine" in c][0]
    assert "--iterations=8" in run and "--duration=1" in run and "--warmUp=200" in run and "--shapes" not in run
    # with repetitions (the default 3), each one is a trtexec process of its share of the iterations
    before = len([c for c in fake_trtexec.read_text().splitlines() if "--loadEngine" in c])
    reps = measure(r, np.zeros((4, 3, 8, 8), np.float32), TimingConfig(warmup=2, min_iterations=8, min_duration_s=1.0),
                   probe_factory=contextlib.nullcontext)
    runs = [c for c in fake_trtexec.read_text().splitlines() if "--loadEngine" in c][before:]
    assert len(runs) == len(reps.repetitions) >= 3 and all("--iterations=2" in c for c in runs)  # 8 // 3
    assert reps.throughput_ips == pytest.approx(1000 * 4 / mean)  # the fake prints the same trace each time


def test_trace_and_summary_that_disagree_are_refused(tmp_path, fake_trtexec, monkeypatch):
    monkeypatch.setenv("FAKE_PRINTED_MEAN", "9.0")
    r = _runner(tmp_path)
    r.load(static_classifier(tmp_path / "m.onnx", 4), (4, 3, 8, 8))
    with pytest.raises(UserError, match="disagree"):
        measure(r, np.zeros((4, 3, 8, 8), np.float32), TimingConfig(warmup=0, min_iterations=1, min_duration_s=0))


def test_wrong_static_batch_is_an_error(tmp_path, fake_trtexec):
    with pytest.raises(UserError, match=r"fixed at \[4, 3, 8, 8\]"):
        _runner(tmp_path).load(static_classifier(tmp_path / "m.onnx", 4), (8, 3, 8, 8))


def test_no_logits(tmp_path, fake_trtexec):
    r = _runner(tmp_path)
    r.load(static_classifier(tmp_path / "m.onnx", 4), (4, 3, 8, 8))
    with pytest.raises(UserError, match="throughput stage only"):
        r.run(np.zeros((4, 3, 8, 8), np.float32))


# -- the exported trace ---------------------------------------------------------------
def _trace(path, rows):
    path.write_text(json.dumps(rows))
    return path


def test_trace_with_and_without_warmup_rows(tmp_path):
    rows = [{"startComputeMs": t, "computeMs": c, "h2dMs": 0.1, "d2hMs": 0.2, "latencyMs": c + 0.3}
            for t, c in ((10, 50.0), (120, 50.0), (200.5, 2.0), (203, 3.0))]
    got = read_times(_trace(tmp_path / "a.json", rows), 200)  # releases up to 8.5: warm-ups exported
    assert got["compute_ms"] == [2.0, 3.0] and got["h2d_ms"] == [0.1, 0.1] and "end_to_end_ms" not in got
    got = read_times(_trace(tmp_path / "b.json", rows[2:]), 200)  # 8.6 on: already left out
    assert got["compute_ms"] == [2.0, 3.0]


def test_trace_of_tensorrt_7_names_copies_in_and_out(tmp_path):
    rows = [{"startInMs": 250, "startComputeMs": 251, "inMs": 0.4, "computeMs": 5.0, "outMs": 0.6,
             "latencyMs": 6.0, "endToEndMs": 6.5}]
    got = read_times(_trace(tmp_path / "t7.json", rows), 200)
    assert got == {"compute_ms": [5.0], "h2d_ms": [0.4], "d2h_ms": [0.6], "latency_ms": [6.0], "end_to_end_ms": [6.5]}


def test_bad_traces_name_the_file(tmp_path):
    with pytest.raises(UserError, match="wrote no timing trace"):
        read_times(tmp_path / "none.json", 200)
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(UserError, match=str(bad)):
        read_times(bad, 200)
    with pytest.raises(UserError, match="within the 200 ms warm-up"):
        read_times(_trace(tmp_path / "w.json", [{"startComputeMs": 5, "computeMs": 1.0}]), 200)


def test_version_from_help_text():
    text = (Path(__file__).parent / "fixtures" / "trtexec" / "trt10.16.1_help.txt").read_text()
    assert version_from_text(text) == "10.16.1" and version_from_text("&&&& RUNNING TensorRT.trtexec # x") is None


# -- through the session and the throughput stage ------------------------------------
def test_throughput_case_on_a_gpu_host(tmp_path, fake_trtexec, monkeypatch):
    """A whole throughput case, as on a GPU host with trtexec: the device check
    is told a T4 is present (there is none here) and trtexec is the fake."""
    from harness import plan
    from harness.runners import devices
    from harness.session import HarnessSession
    from harness.stages import build_plan

    report = devices.DeviceReport(present={"gpu": True}, details={"gpu": "GPU 0: Tesla T4"},
                                  gpus=[devices.GpuInfo(0, "Tesla T4", "535.54", "15360 MiB")])
    monkeypatch.setattr(devices, "detect", lambda *a, **k: report)
    static_classifier(tmp_path / "m.onnx", 2, size=8)
    (tmp_path / "suite.yaml").write_text(textwrap.dedent("""\
        model: toy
        source: {kind: onnx, path: m.onnx, num_classes: 3}
        input: {size: 8, preprocess: imagenet_resize256_crop224}
        timing: {warmup: 2, min_iterations: 8, min_duration_s: 1}
        targets:
          - {name: gpu-trtexec, device: gpu, runner: trtexec, format: onnx, precision: fp16,
             batch_sizes: [2], stages: [throughput], options: {warmup_ms: 200}}
        """))
    suite = plan.read_suite(tmp_path / "suite.yaml")
    (case,) = [c for c in build_plan(suite) if c.stage == "throughput"]
    session = HarnessSession(store=tmp_path / "s.sqlite", cache=tmp_path / "cache")
    res = session.execute(case)
    session.finish()
    assert res.status == "passed", res.reason
    assert res.timing_scope == "device" and res.runner_version == "TensorRT 10.3.0"
    m = res.metrics
    assert m["throughput_ips"] == pytest.approx(1000 * 2 / np.mean(COMPUTE_MS))
    assert m["device_model"] == "Tesla T4" and m["gpu_model"] == "Tesla T4"
    assert m["source_sha256"] == res.artifact_sha256 and m["engine_sha256"] != res.artifact_sha256
    assert "--fp16" in m["artifact_command"] and str(tmp_path / "cache" / "trt") in m["artifact_command"]
    assert m["h2d_latency_ms"]["mean"] == 0.05 and m["trtexec"]["trace_inferences"] == len(COMPUTE_MS)
