"""trtexec reports of TensorRT 7.x, 8.0 - 8.6 and 10.x, read back; the
qps trap; the command lines.

Fixtures: tests/fixtures/trtexec (sources in its README.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.models import tensorrt
from harness.runners import trtexec_io as tx

TX = Path(__file__).parent / "fixtures" / "trtexec"


def log(name):
    return (TX / name).read_text(encoding="utf-8")


# (fixture, version, report format, batch, GPU compute mean, p99, qps)
REPORTS = [
    ("trt8.0.3_onnx_fp16_build.log", "8.0.3", "summary-p99", 4, 0.15217, 0.157715, 6182.1),
    ("trt8.2.3_onnx_fp32_build.log", "8.2.3", "summary-p99", 4, 0.154082, 0.158508, 6239.67),
    ("trt8.4.1_onnx_fp16_build.log", "8.4.1", "summary-p99", 4, 0.16247, 0.427002, 6106.55),
    ("trt8.6.0_load_engine.log", "8.6.0", "summary-multi-percentile", 4, 0.0451127, 0.0521851, 21009.2),
    ("trt10.16.1_onnx_build.log", "10.16.1", "summary-multi-percentile", 1, 0.0359588, 0.041748, 15374.3),
    ("trt10.16.1_load_engine_bs4_cudagraph.log", "10.16.1", "summary-multi-percentile", 4, 0.0387646, 0.0390625,
     24896.9),
]


@pytest.mark.parametrize("name, version, fmt, batch, mean, p99, qps", REPORTS)
def test_reports_of_each_version(name, version, fmt, batch, mean, p99, qps):
    r = tx.parse_trtexec_log(log(name))
    assert r["tensorrt_version"] == version and r["report_format"] == fmt
    assert r["batch_size"] == batch and r["gpu_compute_time_ms"]["mean"] == mean
    assert r["gpu_compute_time_ms"]["p99"] == p99 and r["qps"] == qps
    assert r["throughput_ips"] == pytest.approx(1000 * batch / mean)
    assert r["passed"] is True and r["timing_scope"] == "device"


def test_trt8_0_details():
    r = tx.parse_trtexec_log(log("trt8.0.3_onnx_fp16_build.log"))
    assert r["tensorrt_version_source"] == "[TensorRT v8003]"
    assert r["precision"] == "FP32+FP16" and r["precision_flags"] == ["--fp16"]
    assert r["shapes"] == {"x:0": [4, 1, 28, 28]}  # an input name holding a colon
    assert r["build_shapes"]["x:0"] == {"min": [1, 1, 28, 28], "opt": [4, 1, 28, 28], "max": [16, 1, 28, 28]}
    assert r["end_to_end_host_latency_ms"]["mean"] == 0.280555  # 8.0 - 8.3 only
    assert r["latency_ms"]["p99"] == 0.166382
    assert r["h2d_latency_ms"]["mean"] == 0.00420331 and r["d2h_latency_ms"]["max"] == 0.012207
    assert r["enqueue_time_ms"]["median"] == 0.0373535
    assert (r["total_host_walltime_s"], r["total_gpu_compute_time_s"]) == (3.00109, 2.82322)
    assert r["options"]["saveEngine"] == "model-FP16.plan" and not r["engine_loaded"]


def test_trt8_0_raw_version_line_decoded():
    # 8.0 logged "TensorRT version: 8003"; without the &&&& tag that line is decoded
    text = "\n".join(l for l in log("trt8.0.3_onnx_fp16_build.log").splitlines() if not l.startswith("&&&&"))
    r = tx.parse_trtexec_log(text, batch_size=4)
    assert r["tensorrt_version"] == "8.0.3" and r["tensorrt_version_source"] == "TensorRT version line"


def test_trt8_6_percentiles_and_loaded_engine():
    r = tx.parse_trtexec_log(log("trt8.6.0_load_engine.log"))
    g = r["gpu_compute_time_ms"]
    assert (g["p90"], g["p95"], g["p99"], g["median"]) == (0.0449219, 0.045105, 0.0521851, 0.0439453)
    assert r["latency_ms"]["p95"] == 0.053772 and r["end_to_end_host_latency_ms"] is None
    assert r["engine_loaded"] and any("--loadEngine" in w for w in r["warnings"])


def test_trt10_batch_from_the_automatic_shape_override():
    r = tx.parse_trtexec_log(log("trt10.16.1_onnx_build.log"))
    assert r["shapes"] == {"x": [1, 1, 28, 28]} and r["batch_size"] == 1
    assert r["tensorrt_version_source"] == "[TensorRT v101601]" and r["precision"] == "FP32"
    assert r["d2h_latency_ms"]["p90"] == 0.00421143


def test_trt10_no_data_transfers_reports_zero_h2d():
    r = tx.parse_trtexec_log(log("trt10.16.1_load_engine_bs4_cudagraph.log"))
    assert r["options"]["noDataTransfers"] is True and r["options"]["useCudaGraph"] is True
    assert r["h2d_latency_ms"]["mean"] == 0 and r["gpu_compute_time_ms"]["p95"] == 0.0389404


def test_trt7_2_gpu_compute_block_matches_published_fps():
    r = tx.parse_trtexec_log(log("trt7.2.3.4_t4_retinaface_bs16_excerpt.log"))
    assert r["report_format"] == "legacy-7.x" and r["tensorrt_version"] is None
    g = r["gpu_compute_time_ms"]
    assert (g["min"], g["max"], g["mean"], g["median"], g["p99"]) == (21.3848, 22.6833, 22.174, 22.1829, 22.6833)
    assert r["total_gpu_compute_time_s"] == 2.15088
    assert r["batch_size"] == 16 and r["precision"] == "FP32+FP16"
    # the README's own figure: "1000 * batchsize(16) / mean(22.174) = 721.566fps"
    assert round(r["throughput_ips"], 3) == 721.566


def test_trt7_sweep_of_implicit_batches():
    runs = tx.parse_trtexec_runs(log("trt7_jetson_caffe_int8_implicit_batch_sweep.log"))
    assert [r["batch_size"] for r in runs] == [1, 4, 8, 16, 32, 64, 128]
    r4 = runs[1]
    assert r4["implicit_batch"] and r4["precision"] == "FP32+INT8" and r4["report_format"] == "legacy-7.x"
    assert r4["gpu_compute_time_ms"]["mean"] == 199.649 and r4["gpu_compute_time_ms"]["p99"] == 201.991
    assert r4["latency_ms"]["mean"] == 199.901 and r4["end_to_end_host_latency_ms"]["p99"] == 202.247
    assert r4["enqueue_time_ms"] == {"min": 4.84339, "max": 5.58545, "median": 5.20312}
    assert r4["total_host_walltime_s"] == 3.39842 and r4["total_gpu_compute_time_s"] == 3.39403
    assert r4["throughput_ips"] == pytest.approx(1000 * 4 / 199.649)
    with pytest.raises(UserError, match="7 trtexec runs"):
        tx.parse_trtexec_log(log("trt7_jetson_caffe_int8_implicit_batch_sweep.log"))


def test_ais_bench_wrapped_report_without_command():
    text = log("msit_benchmark_trtexec_backend_excerpt.log")
    r = tx.parse_trtexec_log(text)
    assert r["qps"] == 120.699 and r["gpu_compute_time_ms"]["p90"] == 8.5354
    assert r["batch_size"] is None and r["throughput_ips"] is None
    assert any("pass batch_size" in w for w in r["warnings"])
    r = tx.parse_trtexec_log(text, batch_size=1)
    assert r["throughput_ips"] == pytest.approx(1000 / 8.23978) and r["h2d_latency_ms"]["p99"] == 1.56458


# -- the qps trap -------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n, *_ in REPORTS])
def test_qps_counts_batches_not_images(name):
    r = tx.parse_trtexec_log(log(name))
    b, mean, qps = r["batch_size"], r["gpu_compute_time_ms"]["mean"], r["qps"]
    assert r["qps_counts"].startswith("inferences")
    assert r["throughput_ips"] == pytest.approx(1000 * b / mean)
    assert r["throughput_source"] == "1000 * batch / GPU Compute Time mean"
    # exact link: qps counts batches per host second; images/s = qps x batch x walltime / GPU time
    busy = r["gpu_busy_fraction"]
    assert r["throughput_ips"] == pytest.approx(qps * b / busy, rel=1e-4)
    if busy > 0.9:  # a GPU-bound run: images/s is about qps x batch
        assert r["throughput_ips"] == pytest.approx(qps * b, rel=0.1)
    else:           # a host-bound run says so
        assert any("host-bound" in w for w in r["warnings"])
    if b > 1:       # and with batch > 1 it is nowhere near qps itself
        assert r["throughput_ips"] > 2 * qps


def test_host_bound_run_is_flagged():
    r = tx.parse_trtexec_log(log("trt10.16.1_onnx_build.log"))
    assert r["gpu_busy_fraction"] == pytest.approx(1.6586 / 3.00013)
    assert r["throughput_ips"] == pytest.approx(27809.6, rel=1e-5) and r["qps"] == 15374.3


def test_implicit_batch_qps_already_counts_images():
    runs = tx.parse_trtexec_runs(log("trt7_jetson_caffe_int8_implicit_batch_sweep.log"))
    for r in runs:
        assert r["qps_counts"].startswith("images")
        # trtexec multiplied by --batch itself: qps ~ images/s, not qps x batch
        assert r["throughput_ips"] == pytest.approx(r["qps"] / r["gpu_busy_fraction"], rel=1e-4)
        assert r["throughput_ips"] == pytest.approx(r["qps"], rel=0.01)
    assert runs[-1]["batch_size"] == 128 and runs[-1]["throughput_ips"] < 2 * runs[-1]["qps"]


def test_caller_batch_wins_with_a_warning():
    r = tx.parse_trtexec_log(log("trt8.6.0_load_engine.log"), batch_size=8)
    assert r["batch_size"] == 8 and r["throughput_ips"] == pytest.approx(8000 / 0.0451127)
    assert any("log says batch 4" in w for w in r["warnings"])


def test_log_without_report_names_the_file():
    path = TX / "trt10.16.1_help.txt"  # real trtexec output, but no timing
    with pytest.raises(UserError) as e:
        tx.parse_trtexec_file(path)
    assert str(path) in str(e.value) and "no performance report" in str(e.value)


# -- helpers -------------------------------------------------------------------------
@pytest.mark.parametrize("tag, version", [(8601, "8.6.1"), (8003, "8.0.3"), (8203, "8.2.3"), (9200, "9.2.0"),
                                          (100001, "10.0.1"), (101601, "10.16.1"), (101300, "10.13.0")])
def test_version_tags(tag, version):
    assert tx.decode_version_tag(tag) == version


def test_shape_specs():
    assert tx.parse_shapes_spec("image:8x3x224x224") == {"image": [8, 3, 224, 224]}
    assert tx.parse_shapes_spec("x:0:4x1x28x28") == {"x:0": [4, 1, 28, 28]}
    assert tx.parse_shapes_spec("'Input:0':1x3x9x9,b:2x5") == {"Input:0": [1, 3, 9, 9], "b": [2, 5]}
    assert tx.parse_shapes_spec("tensor-0=4x1x28x28") == {"tensor-0": [4, 1, 28, 28]}
    assert tx.parse_shapes_spec("s:scalar") == {"s": []}
    with pytest.raises(UserError):
        tx.parse_shapes_spec("image:8x3xHx224")


# -- command lines --------------------------------------------------------------------
def test_command_for_tensorrt_10():
    c = tensorrt.trtexec_command("m.onnx", "m_bs8.plan", 8, "image", (3, 224, 224), "fp16", 500, 10, 200)
    assert c["build"] == ["trtexec", "--onnx=m.onnx", "--saveEngine=m_bs8.plan", "--minShapes=image:8x3x224x224",
                          "--optShapes=image:8x3x224x224", "--maxShapes=image:8x3x224x224", "--fp16",
                          "--skipInference"]
    assert c["run"] == ["trtexec", "--loadEngine=m_bs8.plan", "--shapes=image:8x3x224x224", "--warmUp=500",
                        "--duration=10", "--iterations=200", "--avgRuns=10", "--useSpinWait",
                        "--percentile=90,95,99"]


def test_every_flag_is_in_the_published_help():
    help_text = log("trt10.16.1_help.txt")
    known = set(re.findall(r"^\s+(--[A-Za-z0-9]+)", help_text, re.M))
    c = tensorrt.trtexec_command("m.onnx", "m.plan", 8, "image", (8, 3, 224, 224), "int8+fp16", 200, 3, 10,
                           workspace_mib=4096, no_data_transfers=True)
    used = {a.split("=", 1)[0] for a in c["build"] + c["run"] if a.startswith("--")}
    assert used - known == set()
    assert "--int8" in c["build"] and "--memPoolSize=workspace:4096" in c["build"]


def test_command_switches_by_version():
    c7 = tensorrt.trtexec_command("m.onnx", "m.plan", 1, "x", (3, 8, 8), "fp32", 100, 1, 5, workspace_mib=1024,
                            tensorrt_version="7.2")
    assert "--explicitBatch" in c7["build"] and "--workspace=1024" in c7["build"] and "--buildOnly" in c7["build"]
    assert not any(a.startswith("--percentile") for a in c7["run"])
    c84 = tensorrt.trtexec_command("m.onnx", "m.plan", 1, "x", (3, 8, 8), "int8", 100, 1, 5, workspace_mib=1024,
                             tensorrt_version="8.4")
    assert "--memPoolSize=workspace:1024" in c84["build"] and "--buildOnly" in c84["build"]
    with pytest.raises(UserError, match="strongly typed"):
        tensorrt.trtexec_command("m.onnx", "m.plan", 1, "x", (3, 8, 8), "fp16", 100, 1, 5, tensorrt_version="11.1")
    c11 = tensorrt.trtexec_command("m.onnx", "m.plan", 1, "x", (3, 8, 8), "fp32", 100, 1, 5, tensorrt_version="11.1")
    assert "--useSpinWait" not in c11["run"]


def test_command_rejects_bad_input():
    with pytest.raises(UserError, match="batch_size is 8"):
        tensorrt.trtexec_command("m.onnx", "m.plan", 8, "x", (4, 3, 8, 8), "fp16", 100, 1, 5)
    with pytest.raises(UserError, match="precision"):
        tensorrt.trtexec_command("m.onnx", "m.plan", 8, "x", (3, 8, 8), "fp64", 100, 1, 5)
    c = tensorrt.trtexec_command("m.onnx", "m.plan", 2, "x:0", (3, 8, 8), "fp32", 100, 1, 5)
    assert "--shapes='x:0':2x3x8x8" in c["run"]


# -- added with the harness integration ---------------------------------------------
def test_gpu_model_and_warmup_are_read():
    r = tx.parse_trtexec_log(log("trt8.2.3_onnx_fp32_build.log"))
    assert r["gpu_model"] == "NVIDIA GeForce GTX 1070"
    assert (r["warmup_queries"], r["warmup_ms"], r["trace_queries"]) == (1188, 200.0, 18722)
    r = tx.parse_trtexec_log(log("trt10.16.1_load_engine_bs4_cudagraph.log"))
    assert r["gpu_model"] == "NVIDIA H100 PCIe"
    assert tx.parse_trtexec_log(log("trt7.2.3.4_t4_retinaface_bs16_excerpt.log"))["gpu_model"] is None


def test_static_onnx_gets_no_shape_flags_and_the_trace_is_exported():
    c = tensorrt.trtexec_command("m.onnx", "m.plan", 8, "image", (3, 224, 224), "fp16", 500, 2.5, 10, static=True,
                                 export_times="t.json")
    assert not any(a.startswith(("--shapes", "--minShapes", "--optShapes", "--maxShapes")) for a in c["build"] + c["run"])
    assert "--duration=3" in c["run"] and c["run"][-1] == "--exportTimes=t.json"  # whole seconds, rounded up
    known = set(re.findall(r"^\s+(--[A-Za-z0-9]+)", log("trt10.16.1_help.txt"), re.M))
    assert {a.split("=", 1)[0] for a in c["run"] if a.startswith("--")} <= known
