"""The torch runner (runner: torch), device models on results, and the one rule for missing pieces.

The GPU half of the torch runner needs CUDA: its cases skip here naming what is missing
(no GPU on the project's machines); benchmarks/gpu_check.py runs it on a CUDA box."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from harness.analysis.claims import evaluate_claims
from harness.analysis.comparability import device_model_matches
from harness.config.baselines import Claim, load_baselines
from harness.metrics.timing import TimingConfig, measure
from harness.results import Result
from harness.runners import get_runner_class, why_unavailable
from harness.runners.onnxruntime import OnnxRuntimeRunner, missing_providers
from harness.runners.torch_runner import TorchRunner, autocast_dtype, compile_mode, why_no_cuda
from harness.errors import ExitCode, UserError
from tests.conftest import REPO, write

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
CUDA = torch.cuda.is_available()


# -- options ---------------------------------------------------------------------------
def test_precisions_and_compile_modes():
    assert autocast_dtype("fp32", "gpu") is None
    assert autocast_dtype("fp16", "gpu") == "float16" and autocast_dtype("bf16", "cpu") == "bfloat16"
    assert autocast_dtype("mixed", "gpu") == "float16" and autocast_dtype("mixed", "cpu") == "bfloat16"
    with pytest.raises(UserError, match="no int8 path"):
        autocast_dtype("int8", "gpu")
    assert compile_mode({}, True) is None and compile_mode({"compile": True}, False) == "default"
    # CUDA graphs with compile: torch.compile's own (reduce-overhead)
    assert compile_mode({"compile": True, "cuda_graphs": True}, True) == "reduce-overhead"
    with pytest.raises(UserError, match="not a torch.compile mode"):
        compile_mode({"compile": "fastest"}, True)


def test_why_no_cuda_names_the_fix():
    cpu_build = SimpleNamespace(__version__="2.5.0+cpu", version=SimpleNamespace(cuda=None),
                                cuda=SimpleNamespace(is_available=lambda: False))
    assert "has no CUDA" in why_no_cuda(cpu_build) and "download.pytorch.org/whl/cu" in why_no_cuda(cpu_build)
    no_gpu = SimpleNamespace(__version__="2.14.1+cu130", version=SimpleNamespace(cuda="13.0"),
                             cuda=SimpleNamespace(is_available=lambda: False))
    assert "sees no GPU" in why_no_cuda(no_gpu)
    ok = SimpleNamespace(cuda=SimpleNamespace(is_available=lambda: True))
    assert why_no_cuda(ok) is None


def test_registered_and_unavailable_on_a_gpu_here_says_why():
    assert get_runner_class("torch") is TorchRunner
    assert why_unavailable(TorchRunner, {}, "cpu") is None
    why = why_unavailable(TorchRunner, {}, "gpu")
    assert (why is None) == CUDA
    if not CUDA:
        assert "GPU" in why or "CUDA" in why


# -- the CPU half -------------------------------------------------------------------------
def _small_net():
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=10).eval()


def test_cpu_runner_matches_the_model_and_leaves_the_reference_alone():
    net = _small_net()
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    with TorchRunner("cpu", 0, "fp32", {"channels_last": True}) as r:
        r.load(net, x.shape)
        got = r.run(x)
        m = r.extra_metrics()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert m["torch"]["channels_last"] is True and m["torch"]["autocast"] == "off" and m["peak_precision"] == "fp32"
    # the provider's network is the fp32 NCHW reference of other cases: loaded as a copy
    assert next(net.parameters()).is_contiguous() and r.timing_scope == "host"
    with TorchRunner("cpu", 0, "bf16", {}) as r:
        r.load(net, x.shape)
        low = r.run(x)
    assert low.dtype == np.float32 and np.abs(low - want).max() / np.abs(want).max() < 0.1


class _DeviceTimed:
    """A device-scope runner whose device takes 2 ms a run, its host side more."""

    name, timing_scope = "fake", "device"

    def __init__(self):
        self.n = 0

    def run(self, batch):
        self.n += 1
        return batch[:, :1, 0, 0]

    def synchronize(self):
        pass

    def device_times_ms(self):
        return [2.0] * self.n


def test_device_scope_keeps_the_host_clock_beside_it():
    clock = iter(np.arange(0, 10_000, 0.005))  # 5 ms of host time between any two readings
    t = measure(_DeviceTimed(), np.zeros((4, 3, 2, 2), np.float32),
                TimingConfig(warmup=1, min_iterations=6, min_duration_s=0, repetitions=3, max_repetitions=3,
                             warmup_max_s=0.0),
                clock=lambda: float(next(clock)), probe_factory=lambda: _NoProbe())
    assert t.timing_scope == "device" and t.throughput_ips == pytest.approx(4 / 0.002)
    h = t.host_scope
    assert h["timing_scope"] == "host" and h["throughput_ips"] == pytest.approx(4 / 0.005)
    assert h["throughput_ci_lo"] <= h["throughput_ips"] <= h["throughput_ci_hi"]


class _NoProbe:
    result = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.skipif(not CUDA, reason="no CUDA GPU: torch.cuda.is_available() is False on this host")
def test_gpu_runner_times_the_forward_pass_with_cuda_events():
    net = _small_net()
    x = np.random.default_rng(0).standard_normal((4, 3, 64, 64), dtype=np.float32)
    for opts in ({}, {"channels_last": True}, {"cuda_graphs": True}):
        with TorchRunner("gpu", 0, "fp16", opts) as r:
            r.load(net, x.shape)
            t = measure(r, x, TimingConfig(warmup=3, min_iterations=10, min_duration_s=0.2, repetitions=3))
            m = r.extra_metrics()
        assert t.timing_scope == "device" and t.host_scope["timing_scope"] == "host"
        assert t.host_scope["throughput_ips"] < t.throughput_ips  # the host clock adds the copies
        assert m["gpu_model"] == torch.cuda.get_device_name() and m["peak_precision"] == "fp16"


# -- missing pieces: one rule -------------------------------------------------------------
def test_missing_onnxruntime_gpu_provider_is_a_skip_naming_the_package():
    why = missing_providers("gpu", None, ["AzureExecutionProvider", "CPUExecutionProvider"])
    assert "pip install onnxruntime-gpu" in why
    assert missing_providers("gpu", None, ["CUDAExecutionProvider", "CPUExecutionProvider"]) is None
    assert missing_providers("cpu", None, ["CPUExecutionProvider"]) is None
    assert "onnxruntime-cann" in missing_providers("ascend310p", None, ["CPUExecutionProvider"])
    import onnxruntime as ort

    here = why_unavailable(OnnxRuntimeRunner, {}, "gpu")
    has_gpu = bool({"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(ort.get_available_providers()))
    assert (here is None) == has_gpu and (has_gpu or "onnxruntime-gpu" in here)


_HIDE_MINDSPORE = """\
import sys
# this test's host has no MindSpore: `import mindspore` fails and find_spec finds nothing
for name in ("mindspore", "mindcv"):
    sys.modules[name] = None
"""


def test_a_host_without_mindspore_gets_skips_naming_the_extra(tmp_path):
    """The H200 box of shared/evidence/h200-2026-12-04: no MindSpore. Every case of a
    mindcv suite that needs it skips naming `pip install -e '.[mindspore]'`; none errors."""
    write(tmp_path / "hide" / "sitecustomize.py", _HIDE_MINDSPORE)
    write(tmp_path / "suites" / "ms" / "suite.yaml", """\
        schema_version: 1
        model: xception
        source: {kind: mindcv, arch: xception, num_classes: 10}
        input: {size: 32, preprocess: imagenet_resize256_crop224}
        export: [onnx]
        targets:
          - {name: cpu-onnxruntime, device: cpu, runner: onnxruntime, format: onnx, batch_sizes: [1],
             stages: [parity, throughput]}
          - {name: cpu-mindspore, device: cpu, runner: mindspore, format: native, batch_sizes: [1],
             stages: [throughput]}
        train:
          recipe: {optimizer: momentum, lr_schedule: constant, lr_max: 0.01, epochs: 1, batch_size: 2}
          targets:
            - {name: cpu-ms, device: cpu, framework: mindspore, batch_sizes: [2], steps: 2, image_size: 32}
        """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "hide"), str(REPO)])}
    p = subprocess.run([sys.executable, "-m", "harness", "run", "suites", "-v", "--store", str(tmp_path / "r.sqlite"),
                        "--cache", str(tmp_path / "cache")], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=600)
    out = p.stdout + p.stderr
    assert p.returncode == ExitCode.OK, out
    assert "ModuleNotFoundError" not in out and "No module named" not in out, out
    recs = [json.loads(r[0]) for r in sqlite3.connect(tmp_path / "r.sqlite").execute("SELECT record FROM results")]
    assert {r["stage"] for r in recs} == {"export", "parity", "throughput", "train"}
    for r in recs:
        assert r["status"] == "skipped" and "pip install -e '.[mindspore]'" in r["reason"], r
        assert r["metrics"]["device_model"]  # every row names its device model


# -- device models ----------------------------------------------------------------------
def test_device_model_match_is_by_whole_names():
    assert device_model_matches("T4", "Tesla T4") and device_model_matches("H200", "NVIDIA H200")
    assert device_model_matches("A100", "NVIDIA A100-SXM4-80GB") and device_model_matches("910B", "910B3")
    assert device_model_matches(None, "anything") and not device_model_matches("T4", None)
    for wanted, have in (("T4", "NVIDIA H200"), ("A10", "NVIDIA A100-SXM4-80GB"), ("L4", "NVIDIA L40S"),
                         ("T4", "absent"), ("310P", "310")):
        assert not device_model_matches(wanted, have), (wanted, have)


def _throughput(device, model, bs, ips):
    return Result(model="xception", case=f"throughput[x-bs{bs}]", stage="throughput", status="passed", device=device,
                  batch_size=bs, timing_scope="device", runner="torch",
                  metrics={"throughput_ips": ips, "source_sha256": "same", "device_model": model})


def test_a_claim_about_a_named_gpu_ignores_results_of_another_model():
    claim = Claim(id="c", model="xception", metric="throughput_ips", numerator="ascend310p", denominator="gpu",
                  denominator_model="T4", min_ratio=1.0, at="best_batch", source={"document": "d", "section": "s"})
    h200 = [_throughput("ascend310p", "310P3", 8, 200.0), _throughput("gpu", "NVIDIA H200", 8, 5000.0)]
    (v,) = evaluate_claims(h200, [claim])
    assert v.verdict == "missing" and "gpu (T4)" in v.reason  # the H200's 5000 img/s is not a T4's
    (v,) = evaluate_claims([*h200, _throughput("gpu", "Tesla T4", 8, 100.0)], [claim])
    assert v.verdict == "pass" and v.denominator_value == 100.0


def test_a_baseline_of_a_named_gpu_is_not_held_against_another_model(tmp_path):
    from harness.stages.base import Case, StageContext

    bf = load_baselines(REPO / "baselines.yaml")
    ctx = StageContext(SimpleNamespace(cache=SimpleNamespace(root=tmp_path)), baselines=bf)
    case = Case(suite=SimpleNamespace(model="se_resnext50"), stage="throughput", device="gpu", batch_size=1)
    for model, held in (("NVIDIA H200", False), ("Tesla T4", True)):
        res = Result(model="se_resnext50", case="c", stage="throughput", status="passed", device="gpu",
                     timing_scope="device", metrics={"device_model": model})
        verdicts = ctx.hold_baselines(case, res, "throughput_ips", 1.0e6)
        assert bool([v for v in verdicts if "gpu_t4" in v.id]) \
            == held, (model, verdicts)


# -- the GPU check's CPU half (what CI runs of benchmarks/gpu_check.py) ------------------------
def test_gpu_check_cpu_half_runs_the_torch_suite_and_the_ratio(tmp_path):
    """A runner: torch suite passes parity against its ONNX export and measures throughput
    with an interval; the ratio to a raw loop is measured and printed (its target, >= 0.97,
    is the benchmark's to report: a timed unit test on a shared host would be noise)."""
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--cpu", "--skip-install",
                        "--rounds", "3", "--seconds", "0.6", "--out", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=900)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    ratio = [line for line in out.splitlines() if line.startswith("RATIO ")]
    assert len(ratio) == 1 and "[host]" in ratio[0], out
    median = float(ratio[0].split("median ")[1].split(",")[0])
    assert math.isfinite(median) and median > 0
    recs = [json.loads(r[0]) for r in
            sqlite3.connect(tmp_path / "torch_cpu.sqlite").execute("SELECT record FROM results")]
    by = {(r["stage"], r["target"]): r for r in recs}
    assert by[("parity", "cpu-torch")]["status"] == "passed"
    assert by[("parity", "cpu-torch-bf16-nhwc")]["status"] == "passed"
    t = by[("throughput", "cpu-torch")]
    assert t["status"] == "passed" and t["runner"] == "torch" and t["timing_scope"] == "host"
    m = t["metrics"]
    assert m["throughput_ci_lo"] <= m["throughput_ips"] <= m["throughput_ci_hi"] < math.inf
    assert m["torch"]["compile"] is False and m["torch_network"] == "resnet18"
    assert m["peak_kind"] == "isa_ceiling" and m["peak_fraction"] < 1 and "gemm_fraction" in m
    assert all(r["metrics"].get("device_model") for r in recs)


# -- train options ----------------------------------------------------------------------
def test_train_takes_channels_last_and_says_so(tmp_path):
    from tests.test_train import suite_file

    p = suite_file(tmp_path)
    p.write_text(p.read_text().replace("threads: 1, reduced: true}", "threads: 1, reduced: true,\n"
                                       "       channels_last: true}"))
    store = tmp_path / "r.sqlite"
    r = subprocess.run([sys.executable, "-m", "harness", "run", str(p.parent), "-m", "train", "--store", str(store),
                        "--cache", str(tmp_path / "cache")], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == ExitCode.OK, r.stdout + r.stderr
    [rec] = [json.loads(x[0]) for x in sqlite3.connect(store).execute("SELECT record FROM results")
             if json.loads(x[0])["stage"] == "train"]
    m = rec["metrics"]
    assert m["train_target"]["channels_last"] is True and m["train_target"]["compile"] is False
    assert "channels_last" in m["train_api"] and "channels_last" in rec["reason"]
    # a MindSpore target has no such option: refused when the suite is read
    p.write_text(p.read_text().replace("framework: torch", "framework: mindspore"))
    r = subprocess.run([sys.executable, "-m", "harness", "validate", str(p.parent)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == ExitCode.INPUT and "framework: torch only" in r.stdout + r.stderr


# -- a mindcv suite's network in PyTorch -------------------------------------------------------
def _mindcv_suite(arch, checkpoint=None):
    return SimpleNamespace(source=SimpleNamespace(kind="mindcv", arch=arch, num_classes=10, seed=3),
                           path=Path("s.yaml"), checkpoint=checkpoint)


def test_mindcv_names_go_back_onto_the_timm_reference():
    """The card's rules (timm -> mindcv) read backwards give every reference tensor back."""
    from harness.models import weights
    from harness.models.torch_reference import mindcv_to_timm

    ref = timm.create_model("legacy_xception", pretrained=False, num_classes=10)
    own = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    as_mindcv = {ms: arr + 1.0 for ms, (_, arr) in weights.timm_to_mindcv("xception", own).items()}
    back = mindcv_to_timm("xception", own, as_mindcv, Path("x.ckpt"))
    assert set(back) == {k for k in own if not k.endswith("num_batches_tracked")}
    assert all(np.array_equal(back[k], own[k] + 1.0) for k in back)
    del as_mindcv[next(iter(as_mindcv))]
    with pytest.raises(UserError, match="missing 1"):
        mindcv_to_timm("xception", own, as_mindcv, Path("x.ckpt"))


def test_mindcv_source_runs_its_reference_or_skips_saying_why(tmp_path, monkeypatch):
    from harness.errors import CaseSkipped
    from harness.models import torch_reference

    net, info = torch_reference.build(_mindcv_suite("xception"), None)
    assert info["network"] == "legacy_xception" and "random init" in info["weights"]
    assert isinstance(net, torch.nn.Module) and not net.training
    ckpt = tmp_path / "w.ckpt"
    ckpt.write_bytes(b"x")
    with pytest.raises(CaseSkipped, match="no converter from mindcv resnet18"):
        torch_reference.build(_mindcv_suite("resnet18"), ckpt)  # no card maps its names
    monkeypatch.setitem(sys.modules, "mindspore", None)  # a host without MindSpore
    with pytest.raises(CaseSkipped, match=r"pip install -e '\.\[mindspore\]'"):
        torch_reference.build(_mindcv_suite("xception"), ckpt)


# -- a run that measured nothing on a family the host has --------------------------------------
def test_unmeasured_family_is_one_line_and_require_fails_it(monkeypatch):
    from harness import session
    from harness.runners import devices
    from harness.runners.devices import DeviceReport, GpuInfo

    rep = DeviceReport(present={"cpu": True, "gpu": True}, gpus=[GpuInfo(0, "NVIDIA H200")])
    monkeypatch.setattr(devices, "detect", lambda: rep)

    def r(device, status, reason=""):
        return Result(model="x", case="c", stage="throughput", status=status, device=device, reason=reason)

    results = [r("cpu", "passed"), r("gpu", "skipped", "trtexec not found"), r("gpu", "error", "boom")]
    lines, unmet = session.unmeasured(results, ["gpu"])
    assert len(lines) == 1 and unmet == ["gpu"]
    assert "NVIDIA H200" in lines[0] and "measured nothing" in lines[0] and "1 skipped, 1 error" in lines[0]
    assert session.unmeasured(results, []) == (lines, [])  # said without --require too, but not failed
    results.append(r("gpu", "passed"))
    assert session.unmeasured(results, ["gpu"]) == ([], [])
    # a required family the host lacks: named, failed
    lines, unmet = session.unmeasured([r("cpu", "passed")], ["ascend310p"])
    assert unmet == ["ascend310p"] and "absent" in lines[0]


def test_the_h200_box_of_the_evidence_skips_every_gpu_case_naming_its_install(tmp_path):
    """shared/evidence/h200-2026-12-04: nvidia-smi lists an H200; the CPU-only onnxruntime, no
    TensorRT, no MindSpore. Here torch has no GPU either. `harness run suites -m gpu` skips
    every case naming the missing piece and its install (none errors, as 10 did there), says in
    one line that the GPU measured nothing, and --require gpu makes that exit 1. The nvidia-smi
    line is hand-written in the harness's query format from that box's env.txt values."""
    write(tmp_path / "hide" / "sitecustomize.py", _HIDE_MINDSPORE)
    smi = write(tmp_path / "bin" / "nvidia-smi", "#!/bin/sh\necho '0, NVIDIA H200, 580.159.04, 143771 MiB'\n")
    smi.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "hide"), str(REPO)]),
           "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    store = tmp_path / "r.sqlite"
    p = subprocess.run([sys.executable, "-m", "harness", "run", str(REPO / "suites"), "-m", "gpu", "--require", "gpu",
                        "--store", str(store), "--cache", str(tmp_path / "cache")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    out = p.stdout + p.stderr
    assert p.returncode == ExitCode.FAILED, out
    assert "GPU is on this host (NVIDIA H200) but this run measured nothing on it" in out, out
    assert "ModuleNotFoundError" not in out
    recs = [json.loads(r[0]) for r in sqlite3.connect(store).execute("SELECT record FROM results")]
    assert recs and {r["status"] for r in recs} == {"skipped"}, {(r["case"], r["status"], r["reason"]) for r in recs}
    want = {"onnxruntime": "pip install onnxruntime-gpu", "mindspore": "pip install -e '.[mindspore]'",
            "trtexec": "trtexec not found", "torch": "torch"}
    for r in recs:
        assert r["metrics"]["device_model"] == "NVIDIA H200"
        runner = r["runner"] or "mindspore"  # a train case names its framework
        assert want[runner] in r["reason"], (r["case"], r["reason"])
    assert {r["runner"] for r in recs} >= {"onnxruntime", "trtexec", "torch", "mindspore"}
