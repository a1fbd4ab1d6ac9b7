"""Seed 004's claims measured end to end: a 310P and a 310 measured with
ais_bench, a T4 measured with trtexec, of the same source model and
preprocessing, imported into one store with `harness import`, then `harness
claims` gives measured PASS/FAIL verdicts with ratios and each side's best
batch. Before trtexec logs could be imported the T4 claim was "missing".

The inputs are hand-written here, following the formats of the cited
fixtures (ais_bench: tests/fixtures/ascend/bs16_summary.json; trtexec:
TensorRT 8.6's summary, tests/fixtures/trtexec/trt8.6.0_load_engine.log). Every
time in them is chosen by hand so the ratios are easy to check; none is a
measurement of any device.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.results import bundles

REPO = Path(__file__).resolve().parents[1]
SRC, PREP = "a" * 64, "imagenet_resize256_crop224@test"

# batch -> mean device compute ms (hand-chosen)
NPU_310P = {1: 1.0, 4: 2.2, 8: 5.0, 16: 10.0}      # best bs4: 1818.18 img/s
NPU_310 = {1: 1.25, 4: 4.0, 8: 7.0, 16: 13.5}      # best bs16: 1185.19 img/s
GPU_T4 = {1: 2.0, 4: 5.0, 8: 8.0, 16: 15.0}        # best bs16: 1066.67 img/s
GPU_T4_FAST = {1: 1.5, 4: 4.0, 8: 6.5, 16: 12.0}   # best bs16: 1333.33 img/s


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True)


def ais_bench_summary(path: Path, batch: int, mean: float) -> Path:
    stats = {"min": mean * 0.98, "max": mean * 1.02, "mean": mean, "median": mean, "percentile(99%)": mean * 1.02,
             "count": 100}
    path.write_text(json.dumps({
        "NPU_compute_time": stats, "H2D_latency": {**stats, "mean": 0.3}, "D2H_latency": {**stats, "mean": 0.1},
        "throughput": 1000 * batch / mean, "npu_compute_time_list": [mean] * 4,
        "args": {"model": f"/models/se_resnext50_bs{batch}.om", "batchsize": batch, "device": 0}}))
    return path


def trtexec_run(batch: int, mean: float) -> str:
    """One TensorRT 8.6 run as trtexec prints it: explicit batch, so qps counts batches."""
    qps = 1000 / (mean * 1.02)  # the host keeps the GPU 98% busy
    walltime = 3.0
    stats = (f"min = {mean * 0.97:g} ms, max = {mean * 1.05:g} ms, mean = {mean:g} ms, median = {mean:g} ms, "
             f"percentile(90%) = {mean * 1.01:g} ms, percentile(95%) = {mean * 1.02:g} ms, "
             f"percentile(99%) = {mean * 1.04:g} ms")
    cmd = f"trtexec --onnx=se_resnext50_32x4d.onnx --fp16 --shapes=image:{batch}x3x224x224"
    lines = [f"&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # {cmd}", "=== Device Information ===",
             "Selected Device: Tesla T4", "=== Performance summary ===", f"Throughput: {qps:g} qps",
             "Latency: " + stats, "Enqueue Time: " + stats,
             "H2D Latency: min = 0.5 ms, max = 0.7 ms, mean = 0.6 ms, median = 0.6 ms, percentile(90%) = 0.6 ms, "
             "percentile(95%) = 0.6 ms, percentile(99%) = 0.7 ms",
             "GPU Compute Time: " + stats,
             "D2H Latency: min = 0.01 ms, max = 0.02 ms, mean = 0.01 ms, median = 0.01 ms, percentile(90%) = 0.01 ms, "
             "percentile(95%) = 0.02 ms, percentile(99%) = 0.02 ms",
             f"Total Host Walltime: {walltime:g} s", f"Total GPU Compute Time: {qps * walltime * mean / 1000:g} s"]
    return "\n".join([lines[0]] + [f"[11/23/2026-10:00:00] [I] {x}" for x in lines[1:]]
                     + [f"&&&& PASSED TensorRT.trtexec [TensorRT v8601] # {cmd}"]) + "\n"


def _import_npu(store, tmp_path, device, table):
    files = [ais_bench_summary(tmp_path / f"{device}_bs{b}_summary.json", b, m) for b, m in table.items()]
    p = _cli("import", *files, "--store", store, "--model", "se_resnext50", "--device", device,
             "--source-sha256", SRC, "--preprocessing", PREP)
    assert p.returncode == 0, p.stderr


def _sweep(path: Path, table) -> Path:
    path.write_text("".join(trtexec_run(b, m) for b, m in table.items()))
    return path


def _claims(store):
    p = _cli("claims", "--store", store)
    return p, {line.split(": ", 1)[0].split()[-1]: line for line in p.stdout.splitlines()}


def test_310p_310_and_t4_claims_measured_end_to_end(tmp_path):
    store = tmp_path / "claims.sqlite"
    _import_npu(store, tmp_path, "ascend310p", NPU_310P)
    _import_npu(store, tmp_path, "ascend310", NPU_310)
    p, lines = _claims(store)
    assert lines["se_resnext50.claim.310p_vs_t4.best_batch"].startswith("MISSING")  # no T4 figure yet

    log = _sweep(tmp_path / "t4_sweep.log", GPU_T4)
    p = _cli("import", log, "--store", store, "--model", "se_resnext50", "--device", "gpu",
             "--source-sha256", SRC, "--preprocessing", PREP)
    assert p.returncode == 0, p.stderr
    assert "4 result(s) added in 1 new run(s)" in p.stdout
    p, lines = _claims(store)
    assert p.returncode == 0, p.stdout + p.stderr
    v310 = lines["se_resnext50.claim.310p_vs_310.best_batch"]
    assert v310.startswith("PASS") and "measured" in v310
    assert "(bs4) / ascend310 1185.185 (bs16) = 1.5341 >= 1.2" in v310
    vt4 = lines["se_resnext50.claim.310p_vs_t4.best_batch"]
    assert vt4.startswith("PASS") and "measured" in vt4
    assert "ascend310p 1818.182 (bs4) / gpu (T4) 1066.667 (bs16) = 1.7045 >= 1.6" in vt4


def test_a_faster_t4_fails_the_claim(tmp_path):
    store = tmp_path / "claims.sqlite"
    _import_npu(store, tmp_path, "ascend310p", NPU_310P)
    log = _sweep(tmp_path / "t4_fast.log", GPU_T4_FAST)
    assert _cli("import", log, "--store", store, "--model", "se_resnext50", "--device", "gpu",
                "--source-sha256", SRC, "--preprocessing", PREP).returncode == 0
    p, lines = _claims(store)
    assert p.returncode == 1  # a failed claim
    vt4 = lines["se_resnext50.claim.310p_vs_t4.best_batch"]
    assert vt4.startswith("FAIL") and "1818.182 (bs4) / gpu (T4) 1333.333 (bs16) = 1.3636 < 1.6" in vt4


def test_another_model_or_preprocessing_is_not_comparable(tmp_path):
    store = tmp_path / "claims.sqlite"
    _import_npu(store, tmp_path, "ascend310p", NPU_310P)
    log = _sweep(tmp_path / "t4.log", GPU_T4)
    assert _cli("import", log, "--store", store, "--model", "se_resnext50", "--device", "gpu",
                "--source-sha256", "b" * 64, "--preprocessing", PREP).returncode == 0
    _, lines = _claims(store)
    vt4 = lines["se_resnext50.claim.310p_vs_t4.best_batch"]
    assert vt4.startswith("NOT_COMPARABLE") and "model artifact aaaaaaaaaaaa vs bbbbbbbbbbbb" in vt4


def test_imported_trtexec_result_is_images_per_second_not_qps(tmp_path):
    log = _sweep(tmp_path / "t4.log", {16: 15.0})
    (r,) = bundles.trtexec_results(log, model="se_resnext50", device="gpu", run_id="x")
    assert r.timing_scope == "device" and r.runner == "trtexec" and r.runner_version == "TensorRT 8.6.1"
    assert r.precision == "fp16" and r.batch_size == 16 and r.metrics["device_model"] == "Tesla T4"
    assert r.metrics["throughput_ips"] == pytest.approx(16000 / 15.0)
    qps = r.metrics["trtexec"]["qps"]
    assert qps == pytest.approx(1000 / 15.3, rel=1e-4) and r.metrics["throughput_ips"] > 10 * qps
    assert r.metrics["latency_ms_p99"] == pytest.approx(15.6) and r.metrics["h2d_latency_ms"]["mean"] == 0.6
    # --batch-size names the batch when the log cannot (msit's relayed summary has no command line)
    relayed = REPO / "tests" / "fixtures" / "trtexec" / "msit_benchmark_trtexec_backend_excerpt.log"
    with pytest.raises(UserError, match="pass --batch-size"):
        bundles.trtexec_results(relayed, model="m", device="gpu", run_id="x")
    (r,) = bundles.trtexec_results(relayed, model="m", device="gpu", batch_size=1, run_id="x")
    assert r.metrics["throughput_ips"] == pytest.approx(1000 / 8.23978)


def test_cli_import_of_cited_logs(tmp_path):
    store = tmp_path / "s.sqlite"
    fx = REPO / "tests" / "fixtures" / "trtexec"
    p = _cli("import", fx / "trt7.2.3.4_t4_retinaface_bs16_excerpt.log", "--store", store, "--model", "retinaface",
             "--device", "gpu", "--device-model", "T4")
    assert p.returncode == 0 and "1 result(s) added" in p.stdout, p.stderr
    again = _cli("import", fx / "trt7.2.3.4_t4_retinaface_bs16_excerpt.log", "--store", store, "--model",
                 "retinaface", "--device", "gpu", "--device-model", "T4")
    assert "0 result(s) added" in again.stdout and "1 already present" in again.stdout
    p = _cli("import", fx / "trt7_jetson_caffe_int8_implicit_batch_sweep.log", "--store", store, "--model", "r50",
             "--device", "gpu")
    assert p.returncode == 0 and "7 result(s) added" in p.stdout
    p = _cli("import", fx / "trt10.16.1_help.txt", "--store", store, "--model", "m", "--device", "gpu")
    assert p.returncode == 3 and "no performance report" in p.stderr and "Traceback" not in p.stderr
    p = _cli("import", fx / "trt8.6.0_load_engine.log", "--store", store, "--model", "m", "--device", "ascend310p")
    assert p.returncode == 3 and "a trtexec log is a GPU measurement" in p.stderr
    p = _cli("import", fx / "trt8.6.0_load_engine.log", "--store", store)
    assert p.returncode == 3 and "need --model and --device" in p.stderr


def test_sniff_tells_trtexec_logs_apart(tmp_path):
    fx = REPO / "tests" / "fixtures" / "trtexec"
    assert bundles.sniff(fx / "trt8.4.1_onnx_fp16_build.log") == "trtexec"
    assert bundles.sniff(fx / "trt7.2.3.4_t4_retinaface_bs16_excerpt.log") == "trtexec"
    other = tmp_path / "notes.txt"
    other.write_text("nothing to see\n")
    with pytest.raises(UserError, match="saved trtexec log"):
        bundles.sniff(other)
