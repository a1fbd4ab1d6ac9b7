"""Efficiency: a throughput result's GFLOP/s and the fraction of the machine's peak it reaches.

**Operations per image** are counted from the ONNX graph with onnx-tool
(shape inference + per-node profile). Only Conv, ConvTranspose, Gemm and
MatMul are summed: that is what the published figures count (timm's and the
papers' GMACs are multiply-accumulates of convolutions and linear layers;
BatchNormalization, activations and pooling are left out, and ONNX Runtime
folds the batch norms into the convolutions anyway). One MAC = 2 FLOPs; the
result stores both (``macs_per_image``, ``gflop_per_image``).

**The peak** of a CPU host is measured once per machine and cached (a JSON
file under ``<cache>/peak/``): a large float32 GEMM in ONNX Runtime (MatMul,
its default intra-op threads) and numpy's (its BLAS threads), the better of
the two, each with its thread count recorded. For NPUs and GPUs the vendor's
published peak for the precision is used, with its source
(:data:`PUBLISHED_PEAKS`); such a fraction is against a datasheet, not a
measurement, and says so (``peak_kind``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import platform
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

from harness.fsio import write_text
from harness.metrics.interference import InterferenceProbe

COUNTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
PEAK_FORMAT = 1
GEMM_N = 2048  # large enough to be compute-bound, small enough to measure in about a second on 2 cores

#: (device model as npu-smi / nvidia-smi name it, precision) -> (peak GFLOP/s,
#: source). Dense figures as the vendors announced them; an INT8 figure is in
#: TOPS (ops, not FLOPs). Each source names where the figure was checked
#: (2026-11-24) and what it rests on; a figure no source gave is marked derived.
PUBLISHED_PEAKS: dict[tuple[str, str], tuple[float, str]] = {
    ("Tesla T4", "fp32"): (8100.0, "NVIDIA T4 announcement (GTC Japan, 2018-09-13, as reported by geektopia.es): "
                                   "FP32 8.1 TFLOPS; = 2,560 CUDA cores x 2 x 1,590 MHz boost"),
    ("Tesla T4", "fp16"): (65000.0, "NVIDIA T4 announcement (GTC Japan, 2018-09-13, as reported by geektopia.es): "
                                    "mixed precision FP16/FP32 65 TFLOPS (Tensor Cores)"),
    ("Tesla T4", "int8"): (130000.0, "NVIDIA T4 announcement (GTC Japan, 2018-09-13, as reported by geektopia.es): "
                                     "INT8 130 TOPS (Tensor Cores)"),
    # H100 SXM5 dense figures from NVIDIA's "H100 Tensor Core GPU Architecture" whitepaper (2022), as
    # tabulated at glennklockwood.com/garden/processors/h100 (checked 2026-12-04): FP32 66.9, TF32 494.7,
    # FP16 / BF16 989.4 TFLOPS dense (1,978.9 with 2:4 sparsity, which a dense network does not use).
    # The H200 is the same GH100 die and SM count at the same 1,980 MHz (its datasheet differs in
    # memory only; nvidia-smi reported clocks.max.sm 1980 MHz on the H200 of
    # shared/evidence/h200-2026-12-04/env.txt), so its dense compute peaks are the H100 SXM5's.
    **{(name, prec): (tflops * 1000.0, f"{src}: {prec.upper()} {tflops} TFLOPS dense (NVIDIA H100 whitepaper "
                                       "via glennklockwood.com, checked 2026-12-04)")
       for name, src in (("NVIDIA H100 80GB HBM3", "H100 SXM5"),
                         ("NVIDIA H200", "H200 SXM (H100 SXM5 compute: same GH100, 132 SMs, 1,980 MHz)"))
       for prec, tflops in (("fp32", 66.9), ("tf32", 494.7), ("fp16", 989.4), ("bf16", 989.4))},
    ("310", "fp16"): (8000.0, "HiSilicon, 'Key Information About the Huawei Ascend 310' (2018-10-10): "
                              "8 TFLOPS FP16 in typical configuration, 8 W"),
    ("310", "int8"): (16000.0, "HiSilicon, 'Key Information About the Huawei Ascend 310' (2018-10-10): "
                               "16 TOPS INT8 in typical configuration, 8 W"),
    ("310P3", "int8"): (140000.0, "Atlas 300I Duo, two Ascend 310P chips, 280 TOPS INT8 (Huawei's figure as "
                                  "reported by 3dnews.ru, 2025-10-19): 140 TOPS per chip"),
    ("310P3", "fp16"): (70000.0, "derived, not published in a source checked here: half the 310P's 140 TOPS "
                                 "INT8, the FP16:INT8 ratio Huawei publishes for the 310 (8 : 16)"),
}


def count_ops(onnx_path, batch_size: int = 1, input_shape: tuple[int, ...] | None = None) -> dict:
    """Multiply-accumulates per image of the graph's Conv/Gemm/MatMul nodes (onnx-tool's profile).

    ``input_shape`` (batch first) fixes a graph input with symbolic dimensions
    (a dynamic-batch export); the count is then per image of that shape."""

    import onnx
    import onnx_tool

    proto = onnx.load(str(onnx_path))
    feeds = None
    if input_shape is not None:
        inits = {t.name for t in proto.graph.initializer}
        first = next(i for i in proto.graph.input if i.name not in inits)
        feeds = {first.name: np.zeros(input_shape, np.float32)}
        batch_size = input_shape[0]
    model = onnx_tool.Model(proto)
    with contextlib.redirect_stdout(io.StringIO()):  # onnx-tool prints its progress
        model.graph.shape_infer(feeds)
        model.graph.profile()
    macs = sum(float(n.macs[0]) for n in model.graph.nodemap.values() if n.op_type in COUNTED_OPS)
    per_image = macs / max(1, batch_size)
    try:
        counter = f"onnx-tool {version('onnx-tool')}"
    except Exception:  # noqa: BLE001 - the version is a label only
        counter = "onnx-tool"
    return {"macs_per_image": per_image, "gflop_per_image": 2 * per_image / 1e9,
            "ops_counted": list(COUNTED_OPS), "ops_counter": counter}


# -- the host's peak ----------------------------------------------------------------
def _best_gflops(fn, n: int, seconds: float) -> float:
    fn()  # first call: allocation, thread-pool start
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def measure_onnxruntime_gemm(n: int = GEMM_N, seconds: float = 1.0) -> dict:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, 8)
    so = ort.SessionOptions()
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {"a": rng.standard_normal((n, n), dtype=np.float32), "b": rng.standard_normal((n, n), dtype=np.float32)}
    gf = _best_gflops(lambda: sess.run(None, feed), n, seconds)
    # 0 = ONNX Runtime's default: one intra-op thread per physical core
    return {"gflop_s": gf, "n": n, "intra_op_threads": so.intra_op_num_threads or os.cpu_count(),
            "onnxruntime": ort.__version__, "onnx": onnx.__version__}


def measure_numpy_gemm(n: int = GEMM_N, seconds: float = 1.0) -> dict:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    gf = _best_gflops(lambda: a @ b, n, seconds)
    threads = None
    try:
        cfg = np.show_config(mode="dicts")
        blas = (cfg.get("Build Dependencies") or {}).get("blas") or {}
        name = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # noqa: BLE001 - older numpy: no dict form
        name = "unknown"
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(var):
            threads = int(os.environ[var])
            break
    return {"gflop_s": gf, "n": n, "threads": threads or os.cpu_count(), "blas": name, "numpy": np.__version__}


def _machine_key(cpu_model: str | None) -> dict:
    try:
        import onnxruntime as ort
        ort_v = ort.__version__
    except ImportError:
        ort_v = None
    return {"cpu_model": cpu_model or platform.processor(), "cpu_cores": os.cpu_count(), "machine": platform.machine(),
            "onnxruntime": ort_v, "numpy": np.__version__, "format": PEAK_FORMAT}


def host_peak(cache_dir, *, cpu_model: str | None = None, measure=None, probe_factory=InterferenceProbe) -> dict:
    """The host's measured float32 peak, from ``<cache_dir>/peak/`` or measured now and stored there
    (one file per CPU model, core count, ONNX Runtime and numpy version).

    The GEMMs run under the interference probe. A peak measured while other
    processes took more than the threshold share of the machine is stored
    with ``contended: true`` and measured again on the next call, which keeps
    the higher of the two: a busy host at the first run does not leave every
    later fraction of peak inflated. A clean measurement is kept for good."""
    key = _machine_key(cpu_model)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / "peak" / f"{digest}.json"
    cached, invalid = None, None
    if path.is_file():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            cached, invalid = None, f"unreadable ({type(exc).__name__})"  # measured again and replaced
        invalid = invalid or (cached is not None and _invalid_peak(cached))
        if invalid:
            cached = None
        if cached is not None and not cached.get("contended"):
            return cached
    probe = probe_factory()
    with probe:
        ort_m, np_m = (measure or (lambda: (measure_onnxruntime_gemm(), measure_numpy_gemm())))()
    itf = probe.result
    reasons = itf.reasons() if itf is not None else []
    best = max(ort_m["gflop_s"], np_m["gflop_s"])
    peak = {"peak_gflop_s": best, "peak_kind": "measured",
            "peak_source": f"float32 GEMM {ort_m['n']}x{ort_m['n']}: ONNX Runtime MatMul "
                           f"{ort_m['gflop_s']:.1f} GFLOP/s ({ort_m['intra_op_threads']} threads), numpy "
                           f"{np_m['gflop_s']:.1f} GFLOP/s ({np_m['threads']} threads)"
                           + (f"; contended: {'; '.join(reasons)}" if reasons else "")
                           + (f"; measured again: the cached peak {path} was {invalid}" if invalid else ""),
            "onnxruntime_gemm": ort_m, "numpy_gemm": np_m, "machine": key, "contended": bool(reasons),
            "interference": itf.as_dict() if itf is not None else None,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if cached is not None and cached.get("peak_gflop_s", 0) > best and reasons:
        return cached  # both contended: the higher stays, and is tried again next time
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(peak, indent=1))
    return peak


def _invalid_peak(cached) -> str | None:
    """Why a cached peak cannot be used (None: it can): every fraction of peak divides by it."""
    if not isinstance(cached, dict):
        return "not a JSON object"
    v = cached.get("peak_gflop_s")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"malformed (peak_gflop_s {v!r})"
    if not math.isfinite(v) or v <= 0:
        return f"invalid (peak_gflop_s {v})"
    if not isinstance(cached.get("peak_source", ""), str) or not isinstance(cached.get("peak_kind", ""), str):
        return "malformed (peak_source / peak_kind)"
    return None


def published_peak(device_model: str | None, precision: str | None) -> dict | None:
    """The vendor's peak for this chip or GPU model at this precision, or None when we hold none.
    ``tf32`` (fp32 on tensor cores, PyTorch's default for convolutions) falls back to the fp32
    figure on a GPU without TF32 (a T4)."""
    key = (device_model or "", (precision or "fp32").lower())
    if key not in PUBLISHED_PEAKS and key[1] == "tf32":
        key = (key[0], "fp32")
    if key not in PUBLISHED_PEAKS:
        return None
    value, source = PUBLISHED_PEAKS[key]
    kind = "derived" if source.startswith("derived") else "published"
    return {"peak_gflop_s": value, "peak_kind": kind, "peak_source": source}


def efficiency(throughput_ips: float, ops: dict, peak: dict | None) -> dict:
    """The metrics a throughput result gains: GFLOP/s and, with a peak, the fraction of it."""
    out = dict(ops)
    out["gflop_s"] = throughput_ips * ops["gflop_per_image"]
    if peak:
        out.update(peak_gflop_s=peak["peak_gflop_s"], peak_kind=peak["peak_kind"], peak_source=peak["peak_source"],
                   peak_fraction=out["gflop_s"] / peak["peak_gflop_s"])
    return out


# -- the CPU's ISA ceiling ------------------------------------------------------------
#: widest float32 vector per /proc/cpuinfo flag, best first: (flag, lanes, fused multiply-add)
_SIMD = (("avx512f", 16, True), ("avx2", 8, None), ("avx", 8, False), ("sse2", 4, False), ("asimd", 4, True))
#: FMA (or multiply + add) pipes per core assumed: the most any x86-64 or Arm server core has
#: for its widest vectors (Intel's two AVX-512 FMA units; Zen 2-4 and Neoverse N1 likewise two
#: or fewer), so the ceiling is an upper bound and a fraction of it cannot pass 100%
FMA_UNITS = 2


def isa_ceiling(cpuinfo: str, cpus: int, max_mhz: float | None = None) -> dict | None:
    """float32 FLOP/s no code can beat on these cores: physical cores x SIMD lanes x FMA units
    x 2 (a fused multiply-add is two FLOPs) x clock. ``cpuinfo``: /proc/cpuinfo's text;
    ``cpus``: logical CPUs this process may use; ``max_mhz``: cpufreq's cpuinfo_max_freq, else
    the highest "cpu MHz" cpuinfo lists (a VM's nominal clock). None when the text names no
    vector unit or no clock."""
    def field(name):
        return [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                if line.split(":", 1)[0].strip() == name and ":" in line]

    flags = set(" ".join(field("flags") or field("Features")).split())
    simd = next(((f, lanes, fma) for f, lanes, fma in _SIMD if f in flags), None)
    mhz = max_mhz or max((float(x) for x in field("cpu MHz")), default=None)
    if simd is None or not mhz:
        return None
    name, lanes, fma = simd
    if fma is None:
        fma = "fma" in flags
    siblings, cores = field("siblings"), field("cpu cores")
    per_core = max(1, int(siblings[0]) // int(cores[0])) if siblings and cores and int(cores[0]) else 1
    physical = max(1, cpus // per_core)
    # without FMA a multiply and an add issue on separate pipes: the same 2 FLOPs per lane per pipe pair
    gflop = physical * lanes * FMA_UNITS * 2 * mhz / 1e3 / (1 if fma else 2)
    return {"peak_gflop_s": gflop, "peak_kind": "isa_ceiling",
            "peak_source": f"ISA ceiling: {physical} physical core(s) x {lanes} float32 lanes ({name}) x "
                           f"{FMA_UNITS} {'FMA' if fma else 'mul+add'} units (assumed: the most any such core "
                           f"has) x 2 x {mhz:.0f} MHz ({'cpufreq max' if max_mhz else 'cpuinfo cpu MHz'})"}


def host_ceiling(cpus: int | None = None) -> dict | None:
    """:func:`isa_ceiling` of this host (Linux: /proc/cpuinfo and cpufreq)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    try:
        max_mhz = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1e3
    except (OSError, ValueError):
        max_mhz = None
    n = cpus or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    return isa_ceiling(text, n, max_mhz)


def cpu_efficiency(throughput_ips: float, ops: dict, gemm: dict, ceiling: dict | None) -> dict:
    """The CPU's GFLOP/s against its ISA ceiling (``peak_fraction``) and beside the measured
    GEMM (``gemm_fraction``): the GEMM is a reference, not a ceiling, and a figure above it
    says so (``gemm_note``)."""
    out = efficiency(throughput_ips, ops, ceiling or gemm)
    g = gemm["peak_gflop_s"]
    out.update(gemm_gflop_s=g, gemm_source=gemm["peak_source"], gemm_fraction=out["gflop_s"] / g)
    if out["gemm_fraction"] > 1:
        out["gemm_note"] = (f"{100 * out['gemm_fraction']:.0f}% of the measured GEMM: above it (the GEMM is a "
                            "measurement on a shared host, not a ceiling)")
    if ceiling is None:
        out["efficiency_note"] = "no ISA ceiling (no vector unit or clock in /proc/cpuinfo): fraction of the GEMM"
    return out
