"""Operation counts of the three models' ONNX exports against their published figures (REFERENCE.md).

The published figures are GMACs (multiply-accumulates of convolutions and
linear layers, as timm's results CSVs and the papers count them):
SE-ResNeXt50_32x4d 4.26 at 224, Xception 8.40 at 299, EfficientNet-B0 0.40
at 224 (its paper: 0.39 B FLOPs, which counts MACs). The harness counts the
same nodes (Conv/Gemm/MatMul) with onnx-tool and stores FLOPs = 2 x MACs.
"""

from __future__ import annotations

import pytest

from harness.metrics.efficiency import count_ops

PUBLISHED_GMACS = {"seresnext50_32x4d": (4.26, 224), "xception": (8.40, 299), "efficientnet_b0": (0.40, 224)}


@pytest.mark.parametrize("arch", sorted(PUBLISHED_GMACS))
def test_op_count_matches_the_published_gmacs(arch, tmp_path):
    pytest.importorskip("mindspore")
    from harness.models import mindspore_net as networks

    gmacs, size = PUBLISHED_GMACS[arch]
    networks.set_context("CPU")
    path = networks.export(networks.build_network(arch, 1000), (1, 3, size, size), "ONNX", tmp_path / "m.onnx")
    ops = count_ops(path)
    # the published figures are rounded to 0.01 GMACs (0.40: to 2.5%); the
    # MindSpore graphs hold the same convolutions as timm's
    assert ops["macs_per_image"] / 1e9 == pytest.approx(gmacs, rel=0.05)
    assert ops["gflop_per_image"] == pytest.approx(2 * ops["macs_per_image"] / 1e9)


def test_published_peaks_name_their_source():
    from harness.metrics.efficiency import efficiency, published_peak

    t4 = published_peak("Tesla T4", "fp16")
    assert t4["peak_gflop_s"] == 65000.0 and t4["peak_kind"] == "published" and "2018-09-13" in t4["peak_source"]
    assert published_peak("310", "fp16")["peak_gflop_s"] == 8000.0  # HiSilicon's launch figure
    p310p = published_peak("310P3", "FP16")
    assert p310p["peak_gflop_s"] == 70000.0 and p310p["peak_kind"] == "derived"  # no source gave it
    assert published_peak("Some Future GPU", "fp16") is None and published_peak(None, "fp32") is None
    e = efficiency(1000.0, {"gflop_per_image": 8.0}, t4)  # 8 TFLOP/s of 65
    assert e["peak_fraction"] == pytest.approx(8000 / 65000) and e["peak_kind"] == "published"


# -- the CPU's ISA ceiling (issue 23). The cpuinfo texts are hand-written excerpts in the
# format of Linux's /proc/cpuinfo (x86: arch/x86/kernel/cpu/proc.c; arm64: "Features").
_XEON = """processor\t: 0
model name\t: Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz
cpu MHz\t\t: 2500.000
siblings\t: 40
cpu cores\t: 20
flags\t\t: fpu sse sse2 avx fma avx2 avx512f avx512bw
"""
_HASWELL_VM = "model name\t: Intel Core i7\ncpu MHz\t: 3000.0\nflags\t: sse2 avx fma avx2\n"
_ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes\nCPU part\t: 0xd01\n"


def test_isa_ceiling_is_cores_lanes_fma_units_two_and_clock():
    from harness.metrics.efficiency import FMA_UNITS, isa_ceiling

    c = isa_ceiling(_XEON, cpus=80, max_mhz=3900.0)  # 80 logical CPUs, 2 threads a core: 40 cores
    assert c["peak_gflop_s"] == pytest.approx(40 * 16 * FMA_UNITS * 2 * 3900 / 1e3)
    assert c["peak_kind"] == "isa_ceiling" and "avx512f" in c["peak_source"] and "cpufreq" in c["peak_source"]
    v = isa_ceiling(_HASWELL_VM, cpus=2)  # no siblings line: each CPU a core; clock from cpu MHz
    assert v["peak_gflop_s"] == pytest.approx(2 * 8 * FMA_UNITS * 2 * 3000 / 1e3) and "cpu MHz" in v["peak_source"]
    assert isa_ceiling(_ARM, cpus=4) is None  # no clock in the text: no ceiling claimed
    assert isa_ceiling(_ARM, cpus=4, max_mhz=2600)["peak_gflop_s"] == pytest.approx(4 * 4 * FMA_UNITS * 2 * 2.6)


def test_cpu_fraction_is_of_the_ceiling_and_a_figure_above_the_gemm_says_so():
    from harness.metrics.efficiency import cpu_efficiency

    ops = {"gflop_per_image": 1.0}
    gemm = {"peak_gflop_s": 100.0, "peak_kind": "measured", "peak_source": "float32 GEMM"}
    ceiling = {"peak_gflop_s": 400.0, "peak_kind": "isa_ceiling", "peak_source": "ISA ceiling: ..."}
    e = cpu_efficiency(120.0, ops, gemm, ceiling)
    assert e["peak_fraction"] == pytest.approx(0.3) and e["gemm_fraction"] == pytest.approx(1.2)
    assert "above it" in e["gemm_note"]
    assert "gemm_note" not in cpu_efficiency(50.0, ops, gemm, ceiling)


def test_published_gpu_peaks_per_precision():
    from harness.metrics.efficiency import published_peak

    fp16 = published_peak("NVIDIA H200", "fp16")
    assert fp16["peak_gflop_s"] == 989400.0 and "dense" in fp16["peak_source"]
    assert published_peak("NVIDIA H200", "tf32")["peak_gflop_s"] == 494700.0
    assert published_peak("Tesla T4", "tf32")["peak_gflop_s"] == 8100.0  # no TF32 on a T4: its fp32 figure
    assert published_peak("NVIDIA H200", "int8") is None
