"""ais_bench output parsing, atc command building, the ais_bench runner (Python
API and CLI) and the OM path through a session. The samples here are
hand-written in the formats of /work/shared/REFERENCE.md (tests/fixtures/ascend,
see its README); the cited, published samples of every ais_bench release are
tested in test_ais_bench_text.py. The NPU is stood in for by fakes that print
those formats; nothing here claims to measure a device."""

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

from harness.runners import ais_bench_io as abo
from harness.models import atc as atc
from harness.data.labels import read_label_file
from harness.errors import UserError
from harness.runners.ais_bench import AisBenchRunner, check_shape

FIX = Path(__file__).parent / "fixtures" / "ascend"


def read(name):
    return (FIX / name).read_text()


# -- console and summary formats ---------------------------------------------
def test_older_batchsize_line():
    s = abo.parse_stdout(read("ais_bench_stdout_batchsize.txt"))
    assert s.batch_size == 1 and s.throughput_ips == pytest.approx(73.07201342826471)
    assert s.npu_compute_time.mean == 0.66 and s.npu_compute_time.p99 == 0.66
    assert s.throughput() == pytest.approx(73.07201342826471)


def test_batchsize_mean_line_with_h2d_d2h():
    s = abo.parse_stdout(read("ais_bench_stdout_batchsize_mean.txt"))
    assert (s.batch_size, s.throughput_ips) == (16, 1600.0)
    assert s.h2d_latency.mean == 2.0 and s.d2h_latency.p99 == 0.74
    m = s.as_metrics()
    assert m["timing_scope"] == "device" and m["latency_ms_p50"] == 10.0 and m["h2d_latency_ms_mean"] == 2.0


def test_mean_only_line_needs_the_batch():
    s = abo.parse_stdout(read("ais_bench_stdout_mean_only.txt"))
    assert s.npu_compute_time.mean == 20.0 and s.npu_compute_time.min is None
    assert s.throughput() is None
    assert s.throughput(batch_size=8) == pytest.approx(400.0)


def test_multi_device_lines_and_summary_throughput():
    s = abo.parse_stdout(read("ais_bench_stdout_multidevice.txt"))
    assert [(d.index, d.device_id, d.throughput_ips) for d in s.per_device] == [(0, 0, 800.0), (1, 1, 790.0)]
    assert s.throughput() == 1590.0  # the summary, not one device's figure
    assert len(s.as_metrics()["per_device"]) == 2


def test_nothing_parseable_is_a_clear_error():
    with pytest.raises(UserError) as e:
        abo.parse_stdout(read("ais_bench_stdout_crash.txt"), where="ais_bench run")
    msg = str(e.value)
    assert "no performance summary" in msg and "NPU_compute_time" in msg and "ACL: invalid parameter" in msg


def test_summary_json():
    s = abo.parse_summary_json(FIX / "bs16_summary.json")
    assert s.batch_size == 16 and s.throughput() == 1600.0
    assert s.npu_compute_time.count == 4 and s.npu_compute_times_ms == [9.5, 10.0, 10.0, 10.5]
    assert s.as_metrics()["iterations"] == 4


def test_not_a_summary_json():
    with pytest.raises(UserError, match="not an ais_bench summary.*title"):
        abo.parse_summary_json(FIX / "not_a_summary.json")


def test_outputs_read_back_for_accuracy(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    # single-image TXT outputs, and one batched NPY holding two images' rows
    np.savetxt(out / "ILSVRC2012_val_00000001_0.txt", np.array([[0.1, 0.9, 0.0]]), fmt="%.3f")
    np.savetxt(out / "ILSVRC2012_val_00000002_0.txt", np.array([[0.8, 0.1, 0.1]]), fmt="%.3f")
    np.save(out / "ILSVRC2012_val_00000003_0.npy", np.array([[0, 0, 1], [0, 1, 0]], np.float32))
    np.savetxt(out / "ILSVRC2012_val_00000001_1.txt", np.array([[5.0]]))  # a second output: ignored
    labels = tmp_path / "val_label.txt"
    labels.write_text("".join(f"ILSVRC2012_val_0000000{i}.JPEG {c}\n" for i, c in
                              ((1, 1), (2, 0), (3, 2), (4, 0))))
    order = [f"ILSVRC2012_val_0000000{i}" for i in range(1, 5)]
    res = abo.topk_from_outputs(out, labels, ks=(1, 2), input_order=order)
    assert res["num_images"] == 4 and res["top1"] == 75.0 and res["top2"] == 100.0
    with pytest.raises(UserError, match="order of the inputs is unknown"):
        abo.topk_from_outputs(out, labels)
    (tmp_path / "bad.txt").write_text("ILSVRC2012_val_00000001.JPEG\n")
    with pytest.raises(UserError, match="line 1"):
        read_label_file(tmp_path / "bad.txt")


def test_cli_command():
    cmd = abo.build_command("m.om", input="in/", output="out", output_dirname="r1", outfmt="TXT", loop=5,
                            device=[0, 1], batch_size=16, dym_batch=16, display_all_summary=True)
    assert cmd == ["python3", "-m", "ais_bench", "--model", "m.om", "--device", "0,1", "--input", "in/",
                   "--output", "out", "--outfmt", "TXT", "--output_dirname", "r1", "--loop", "5",
                   "--batchsize", "16", "--dymBatch", "16", "--display_all_summary", "1"]


# -- atc ---------------------------------------------------------------------
def test_atc_static_and_dynamic_commands():
    assert atc.soc_version("310") == "Ascend310" and atc.soc_version("310P3") == "Ascend310P3"
    with pytest.raises(UserError, match="310B1"):
        atc.soc_version("310B1")
    static = atc.build_command(Path("m.onnx"), Path("m_bs16"), "image", (16, 3, 224, 224), "Ascend310P3")
    assert static == ["atc", "--model=m.onnx", "--framework=5", "--output=m_bs16", "--input_format=NCHW",
                      "--input_shape=image:16,3,224,224", "--soc_version=Ascend310P3", "--log=error"]
    dyn = atc.build_command(Path("m.onnx"), Path("m_dyn"), "image", (4, 3, 224, 224), "Ascend310",
                            dynamic_batches=[64, 1, 4, 8, 16, 32])
    assert "--input_shape=image:-1,3,224,224" in dyn and dyn[-1] == "--dynamic_batch_size=1,4,8,16,32,64"
    with pytest.raises(UserError, match="2 to 100"):
        atc.build_command(Path("m.onnx"), Path("m"), "image", (1, 3, 8, 8), "Ascend310", dynamic_batches=[1])


def test_atc_failure_shows_command_and_log_tail(tmp_path):
    class P:
        returncode, stdout = 1, "\n".join(f"line {i}" for i in range(30))
        stderr = "E19010: No parser is registered for Op [x]"

    cmd = ["atc", "--model=m.onnx"]
    with pytest.raises(UserError) as e:
        atc.convert(cmd, tmp_path / "m", run=lambda *a, **k: P(), which=lambda _: "/bin/atc")
    msg = str(e.value)
    assert "atc failed (exit 1): atc --model=m.onnx" in msg and "E19010" in msg and "line 29" in msg
    assert "line 5\n" not in msg  # only the tail
    with pytest.raises(UserError, match="no CANN environment"):
        atc.convert(cmd, tmp_path / "m", which=lambda _: None)


# -- runner: Python API ----------------------------------------------------------
class FakeInferSession:
    """InferSession's documented surface; returns one-hot logits."""

    declared = [4, 3, 8, 8]
    instances: list = []

    def __init__(self, device_id, model_path):
        self.device_id, self.model_path, self.times, self.dyn = device_id, model_path, [], None
        FakeInferSession.instances.append(self)

    def get_inputs(self):
        return [type("T", (), {"name": "image", "datatype": "FLOAT32", "shape": list(self.declared)})()]

    def set_dynamic_batchsize(self, n):
        self.dyn = n

    def infer(self, feeds, mode="static"):
        self.mode = mode
        self.times.append(1.0 + len(self.times))
        return [np.eye(3, dtype=np.float32)[np.zeros(len(feeds[0]), int)]]

    def sumary(self):
        return type("S", (), {"exec_time_list": list(self.times)})()

    def finalize(self):
        self.finalized = True


@pytest.fixture
def fake_api(monkeypatch):
    import harness.runners.ais_bench as mod

    FakeInferSession.instances = []
    monkeypatch.setattr(mod, "_import_api", lambda: FakeInferSession)
    return FakeInferSession


def test_api_runner_static(tmp_path, fake_api):
    from harness.metrics.timing import TimingConfig, measure

    om = tmp_path / "m.om"
    om.write_bytes(b"om")
    with AisBenchRunner("ascend310p", 0) as r:
        r.load(om, (4, 3, 8, 8))
        assert r.mode == "api"
        # one repetition after a fixed 2-run warm-up, on a quiet machine: every figure known
        t = measure(r, np.zeros((4, 3, 8, 8), np.float32),
                    TimingConfig(warmup=2, warmup_max_s=0, min_iterations=3, min_duration_s=0, repetitions=1,
                                 max_repetitions=1, min_repetition_s=0), probe_factory=contextlib.nullcontext)
    s = fake_api.instances[0]
    assert s.mode == "static" and s.finalized
    assert t.timing_scope == "device" and t.latencies_ms == [3.0, 4.0, 5.0]  # warmup's 1.0, 2.0 left out


def test_api_runner_refuses_wrong_batch(tmp_path, fake_api):
    om = tmp_path / "m_bs4.om"
    om.write_bytes(b"om")
    with pytest.raises(UserError) as e:
        AisBenchRunner("ascend310", 0).load(om, (8, 3, 8, 8))
    assert "OM input shape is [4, 3, 8, 8], asked to run [8, 3, 8, 8]" in str(e.value)
    assert str(om) in str(e.value) and "atc" in str(e.value)


def test_api_runner_dynamic_batch(tmp_path, fake_api, monkeypatch):
    monkeypatch.setattr(fake_api, "declared", [-1, 3, 8, 8])
    om = tmp_path / "m_dyn.om"
    om.write_bytes(b"om")
    with pytest.raises(UserError, match="dynamic-batch OM, but the target is static"):
        AisBenchRunner("ascend310", 0).load(om, (8, 3, 8, 8))
    r = AisBenchRunner("ascend310", 0, options={"dynamic_batch": True})
    r.load(om, (8, 3, 8, 8))
    r.run(np.zeros((8, 3, 8, 8), np.float32))
    assert fake_api.instances[-1].dyn == 8 and fake_api.instances[-1].mode == "dymbatch"
    with pytest.raises(UserError, match="OM input shape"):
        check_shape([-1, 3, 16, 16], [8, 3, 8, 8], dynamic=True, artifact=om)


# -- runner: command line ----------------------------------------------------------
FAKE_AIS_BENCH = r'''#!{python}
"""Stands in for `python3 -m ais_bench`: reads --input NPY, writes NPY outputs
and a summary JSON, prints the summary lines (formats of REFERENCE.md)."""
import json, os, sys
import numpy as np
argv = sys.argv[1:]
if argv[:2] == ["-c", "import ais_bench"]:
    sys.exit(0)
mode = os.environ.get("FAKE_AIS_BENCH", "ok")
if mode == "fail":
    print("[ERROR] load model failed"); sys.exit(1)
if mode == "silent":
    sys.exit(0)
a = dict(zip(argv[2::2], argv[3::2]))
x = np.load(a["--input"])
outdir = os.path.join(a["--output"], a["--output_dirname"])
os.makedirs(outdir, exist_ok=True)
np.save(os.path.join(outdir, "batch_0.npy"), x.reshape(len(x), -1)[:, :3].astype(np.float32))
json.dump({{"NPU_compute_time": {{"mean": 2.5, "min": 2.5, "max": 2.5, "median": 2.5, "percentile(99%)": 2.5,
           "count": 1}}, "throughput": 1000 * len(x) / 2.5, "npu_compute_time_list": [2.5], "args": a}},
          open(os.path.join(a["--output"], a["--output_dirname"] + "_summary.json"), "w"))
print("[INFO] NPU_compute_time (ms): min = 2.5, max = 2.5, mean = 2.5, median = 2.5, percentile(99%) = 2.5")
'''


@pytest.fixture
def fake_cli(tmp_path):
    exe = tmp_path / "fakepython"
    exe.write_text(FAKE_AIS_BENCH.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return str(exe)


def test_cli_runner_reads_summary_and_outputs(tmp_path, fake_cli):
    om = tmp_path / "m.om"
    om.write_bytes(b"om")
    x = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    with AisBenchRunner("ascend310", 0, options={"ais_bench_mode": "cli", "python": fake_cli}) as r:
        r.load(om, x.shape)
        assert r.mode == "cli"
        out = r.run(x)
        r.run(x)
        assert r.device_times_ms() == [2.5, 2.5]
    np.testing.assert_array_equal(out, x.reshape(2, -1)[:, :3])


@pytest.mark.parametrize("mode, needle", [("fail", "ais_bench exited 1: .*--model.*load model failed"),
                                          ("silent", "no performance summary")])
def test_cli_runner_bad_runs(tmp_path, fake_cli, monkeypatch, mode, needle):
    monkeypatch.setenv("FAKE_AIS_BENCH", mode)
    om = tmp_path / "m.om"
    om.write_bytes(b"om")
    r = AisBenchRunner("ascend310", 0, options={"ais_bench_mode": "cli", "python": fake_cli})
    r.load(om, (1, 3, 2, 2))
    with pytest.raises(UserError, match=f"(?s){needle}"):
        r.run(np.zeros((1, 3, 2, 2), np.float32))
    r.close()


def test_cli_runner_without_ais_bench(tmp_path):
    om = tmp_path / "m.om"
    om.write_bytes(b"om")
    with pytest.raises(UserError, match="ais_bench is not installed for"):
        AisBenchRunner("ascend310", 0, options={"ais_bench_mode": "cli", "python": sys.executable}).load(
            om, (1, 3, 2, 2))


# -- the OM path through a session ----------------------------------------------------
def test_session_converts_dynamic_om_and_records_it(tmp_path, fake_api, monkeypatch):
    from conftest import color_classifier, write

    from harness.runners import devices as devices
    from harness import session as session_mod
    from harness.plan import build_plan
    from harness.config.suite import load_suite
    from test_devices import fake_tools

    monkeypatch.setattr(fake_api, "declared", [-1, 3, 8, 8])
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake_atc = bindir / "atc"
    fake_atc.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import sys
        out = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--output=")][0]
        open(out + ".om", "wb").write(repr(sys.argv[1:]).encode())
        """))
    fake_atc.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    report = devices.detect_with(*fake_tools(npu="npu_smi_info_310p3.txt", board="npu_smi_board.txt"))
    monkeypatch.setattr(devices, "detect", lambda: report)  # the one place detection lives

    color_classifier(tmp_path / "m.onnx")
    suite = load_suite(write(tmp_path / "suite.yaml", """\
        model: toy
        source: {kind: onnx, path: m.onnx, num_classes: 3}
        input: {size: 8, preprocess: imagenet_resize256_crop224}
        timing: {warmup: 1, min_iterations: 2, min_duration_s: 0}
        targets:
          - {name: npu, device: ascend310p, runner: ais_bench, format: om, batch_sizes: [1, 4],
             stages: [throughput], dynamic_batch: true}
        """))
    s = session_mod.HarnessSession(store=tmp_path / "r.sqlite", cache=tmp_path / "cache")
    results = [s.execute(c) for c in build_plan(suite) if c.stage == "throughput"]
    s.finish()
    assert [r.status for r in results] == ["passed", "passed"], [r.reason for r in results]
    r = results[0]
    assert r.timing_scope == "device" and r.metrics["device_model"] == "310P3"
    cmd = r.metrics["artifact_command"]
    assert "--soc_version=Ascend310P3" in cmd and "--dynamic_batch_size=1,4" in cmd and ":-1,3,8,8" in cmd
    assert r.artifact_sha256 == results[1].artifact_sha256  # one OM for both batch sizes
    assert len(r.metrics["source_sha256"]) == 64
    oms = list((tmp_path / "cache" / "om").glob("*.om"))
    assert len(oms) == 1 and json.loads(oms[0].with_suffix(".atc.json").read_text())["command"] == cmd
