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
