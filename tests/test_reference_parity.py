"""Parity with the reference implementations (timm), on real photographs.

Same random weights in both (timm's model, BatchNorm statistics randomised so
they matter, saved as a .pth and loaded through the harness's converter);
scikit-image's sample photos preprocessed by the model's timm recipe. The
harness's MindSpore network and timm must give the same logits (max abs
difference <= 1e-4 x the logit scale; DESIGN.md measured ~1e-5, EfficientNet
~5e-4 relative to unit-scale logits) and the same top-1; so must the ONNX
file MindSpore exports and the one torch.onnx.export writes (dynamic batch).
"""

from __future__ import annotations

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
pytest.importorskip("mindcv")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
skdata = pytest.importorskip("skimage.data")

from PIL import Image  # noqa: E402

from harness.models import weights as C  # noqa: E402
from harness import data
from harness.models import mindspore_net as N
from harness.models import torch_net as T  # noqa: E402
from harness.models.cards import CARDS, guess_arch  # noqa: E402

ARCHS = tuple(CARDS)  # the carded architectures
REFERENCES = {a: c.reference for a, c in CARDS.items()}

NUM_CLASSES = 10
RECIPES = {"seresnext50_32x4d": "timm_legacy_seresnext50_32x4d", "xception": "timm_legacy_xception",
           "efficientnet_b0": "timm_efficientnet_b0"}
PHOTOS = ("chelsea", "coffee")  # a cat (300x451) and a cup (400x600): two aspect ratios
REL_TOL = 1e-4


def _photos(recipe) -> np.ndarray:
    return np.stack([recipe(Image.fromarray(getattr(skdata, n)())) for n in PHOTOS])


def _randomise_batchnorm(model, seed):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.1
            m.running_mean.data = torch.randn(n, generator=g) * 0.1
            m.running_var.data = torch.rand(n, generator=g) * 1.5 + 0.5


def _same(got, want, what):
    scale = float(np.abs(want).max())
    diff = float(np.abs(got - want).max())
    assert scale > 1e-2, f"{what}: degenerate logits ({scale:.3g})"
    assert diff <= REL_TOL * scale, f"{what}: max abs diff {diff:.3g} vs logit scale {scale:.3g}"
    assert (got.argmax(1) == want.argmax(1)).all(), f"{what}: top-1 differs"
    return diff, scale


@pytest.mark.parametrize("arch", ARCHS)
def test_mindspore_and_onnx_match_timm_on_photos(arch, tmp_path, record_property):
    N.set_context("CPU")
    model = T.build_model(arch, NUM_CLASSES, seed=0)
    _randomise_batchnorm(model, seed=1)
    pth = tmp_path / "ref.pth"
    torch.save(model.state_dict(), pth)

    x = _photos(data.RECIPES[RECIPES[arch]])
    want = T.predict(model, x)

    net = N.build_network(arch, NUM_CLASSES, seed=5)
    N.load_checkpoint(net, pth)  # through the converter
    got = N.predict(net, x)
    diff, scale = _same(got, want, f"{arch}: MindSpore vs timm")
    record_property("mindspore_vs_timm_max_abs", diff)
    print(f"{arch}: MindSpore vs timm max abs {diff:.3g} (logit scale {scale:.3g})")

    ms_onnx = N.export(net, x.shape, "ONNX", tmp_path / "ms")
    pt_onnx = T.export_onnx(T.build_model(arch, NUM_CLASSES, pth), tmp_path / "pt", x.shape[-1])
    for name, path in (("MindSpore ONNX", ms_onnx), ("torch ONNX", pt_onnx)):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in sess.get_inputs()] == ["image"] and [o.name for o in sess.get_outputs()] == ["class"]
        (out,) = sess.run(None, {"image": x})
        d, _ = _same(out, want, f"{arch}: {name} vs timm")
        print(f"{arch}: {name} vs timm max abs {d:.3g}")
    # the torch export's batch is dynamic
    sess = ort.InferenceSession(str(pt_onnx), providers=["CPUExecutionProvider"])
    assert isinstance(sess.get_inputs()[0].shape[0], str)
    (one,) = sess.run(None, {"image": x[:1]})
    _same(one, want[:1], f"{arch}: torch ONNX at batch 1")


def test_mapping_names_match_reference_model():
    assert set(REFERENCES) == set(ARCHS)
    for name in REFERENCES.values():
        assert name in timm.list_models(name)


def test_pytorch_source_exports_dynamic_onnx_and_passes_parity(tmp_path):
    """``source.kind: pytorch``: a .pth into timm, torch.onnx.export (dynamic batch,
    configurable opset), parity of the export against the torch model."""
    import json
    import sqlite3

    from tests.conftest import run_pytest, write

    model = T.build_model("efficientnet_b0", NUM_CLASSES, seed=0)
    _randomise_batchnorm(model, seed=1)
    torch.save(model.state_dict(), tmp_path / "b0.pth")
    write(tmp_path / "suites" / "pt" / "suite.yaml", """\
        schema_version: 1
        model: efficientnet_b0
        source: {kind: pytorch, arch: efficientnet_b0, num_classes: 10, checkpoint: ../../b0.pth, opset: 13}
        input: {size: 64, preprocess: timm_efficientnet_b0}
        export: [onnx]
        targets:
          - {device: cpu, runner: onnxruntime, format: onnx, batch_sizes: [1, 3], stages: [parity]}
        """)
    store = tmp_path / "r.sqlite"
    p = run_pytest(["suites", "-m", "parity or export", "--harness-store", str(store),
                    "--harness-cache", str(tmp_path / "cache")], cwd=tmp_path)
    assert "2 passed" in p.stdout, p.stdout + p.stderr
    recs = [json.loads(r[0]) for r in sqlite3.connect(store).execute("SELECT record FROM results")]
    [export] = [r for r in recs if r["stage"] == "export"]
    shas = {v["sha256"] for v in export["metrics"]["artifacts"].values()}
    assert len(export["metrics"]["artifacts"]) == 2 and len(shas) == 1  # one dynamic-batch file for both sizes
    import onnx

    [path] = list((tmp_path / "cache").rglob("*.onnx"))
    m = onnx.load(str(path))
    assert m.opset_import[0].version == 13 and m.graph.input[0].name == "image"


def _ms_pools(arch, net):
    if arch == "seresnext50_32x4d":
        return [net.pool0]
    if arch == "xception":
        return [b.rep[len(b.rep) - 1] for b in net.blocks if b.skip is not None]
    return []


@pytest.mark.parametrize("arch", ARCHS)
def test_padded_layers_match_timm_at_258_and_320(arch, tmp_path):
    """Every strided convolution wider than 1x1 and every max pool (the layers
    the cards' padding fixes touch) against timm's own module, fed the tensor
    timm's network hands it at inputs of 258 and 320. The reference is timm,
    not a re-implementation of the padding.

    Why these sizes: "same" padding and the references' padding agree on some
    sizes and not others. SE-ResNeXt's pool0 (ceil mode) differs from "same"
    only on an odd feature map: 258 gives 129 (224 and 256 give 112 and 128,
    where the unfixed pool matched). EfficientNet's stride-2 convolutions and
    Xception's pools differ on even maps: 320 gives 160, 80, 40, 20."""
    from mindspore import nn as msnn

    N.set_context("CPU")
    model = T.build_model(arch, NUM_CLASSES, seed=0)
    pth = tmp_path / "ref.pth"
    torch.save(model.state_dict(), pth)
    net = N.build_network(arch, NUM_CLASSES, seed=5)
    N.load_checkpoint(net, pth)
    # strided convolutions with a kernel wider than 1 (a 1x1 one pads nothing)
    pt_convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and max(m.stride) > 1
                and max(m.kernel_size) > 1]
    ms_convs = [c for _, c in net.cells_and_names() if isinstance(c, msnn.Conv2d) and max(c.stride) > 1
                and max(c.kernel_size) > 1]
    pt_pools = [m for m in model.modules() if isinstance(m, torch.nn.MaxPool2d)]
    ms_pools = _ms_pools(arch, net)
    assert len(pt_convs) == len(ms_convs) >= 1 and len(pt_pools) == len(ms_pools)
    for a, b in zip(pt_convs, ms_convs):  # the same layer: the converter put timm's weights there
        np.testing.assert_array_equal(a.weight.detach().numpy(), b.weight.asnumpy())
    seen = {}
    hooks = [m.register_forward_hook(lambda m, i, o: seen.setdefault(id(m), []).append(  # copies: timm works in place
                 (i[0].numpy().copy(), o.numpy().copy())))
             for m in (*pt_convs, *pt_pools)]
    with torch.no_grad():
        for size in (258, 320):
            model(torch.from_numpy(np.random.default_rng(size).standard_normal((1, 3, size, size),
                                                                               dtype=np.float32)))
    for h in hooks:
        h.remove()
    for pt, msm, exact in [*((p, m, False) for p, m in zip(pt_convs, ms_convs)),
                           *((p, m, True) for p, m in zip(pt_pools, ms_pools))]:
        for x, want in seen[id(pt)]:
            got = msm(ms.Tensor(x)).asnumpy()
            what = f"{arch} {type(pt).__name__} on {x.shape[2]}x{x.shape[3]}"
            assert got.shape == want.shape, f"{what}: {got.shape} vs timm {want.shape}"
            if exact:
                np.testing.assert_array_equal(got, want, err_msg=what)
            else:
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()), err_msg=what)
