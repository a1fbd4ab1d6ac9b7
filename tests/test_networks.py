"""harness.models.mindspore_net: the three real architectures in MindSpore, their exports.

MindSpore's CPU convolutions are slow (<1 GFLOP/s), so forward passes here
run at batch 1, 98x98, 10 classes. 98 is chosen so that the feature maps
after the stems have odd sizes: there MindSpore's ``pad_mode="same"`` and
the reference's symmetric / ceil-mode padding give different results, so the
fixes are exercised, not only present.

Random mindcv initialisation makes logits vanish (EfficientNet-B0's are
~1e-13), which would make any parity check meaningless; the shared networks
get a variance-preserving random re-initialisation (``_well_scaled``) first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("mindcv")

from harness.models import mindspore_net as N  # noqa: E402
from harness.errors import UserError  # noqa: E402
from harness.models.cards import CARDS, guess_arch  # noqa: E402

ARCHS = tuple(CARDS)  # the carded architectures
REFERENCES = {a: c.reference for a, c in CARDS.items()}

REPO = Path(__file__).resolve().parents[1]
PUBLISHED_PARAMS = {"seresnext50_32x4d": 27.56e6, "xception": 22.86e6, "efficientnet_b0": 5.29e6}
RES = 98
NUM_CLASSES = 10


@pytest.fixture(scope="module", autouse=True)
def _context():
    N.set_context("CPU")


_well_scaled = N.reinit_well_scaled


def _assert_same_logits(got, want, what: str) -> None:
    got = np.asarray(got, dtype=np.float64).ravel()
    want = np.asarray(want, dtype=np.float64).ravel()
    assert got.shape == want.shape, what
    scale = np.abs(want).max()
    assert scale > 1e-3, f"{what}: degenerate logits (max |logit| {scale:.3g}); the comparison would mean nothing"
    diff = np.abs(got - want).max()
    cos = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want)))
    assert diff <= 1e-4 * scale, f"{what}: max abs diff {diff:.3g} vs logit scale {scale:.3g}"
    assert cos > 0.9999, f"{what}: cosine {cos:.6f}"


@pytest.fixture(scope="module", params=ARCHS)
def small(request, tmp_path_factory):
    """One low-resolution network per architecture, its input and MindSpore logits."""
    arch = request.param
    net = N.build_network(arch, num_classes=NUM_CLASSES, seed=0)
    _well_scaled(net, seed=1)
    x = np.random.default_rng(2).standard_normal((1, 3, RES, RES)).astype(np.float32)
    y = N.predict(net, x)
    return {"arch": arch, "net": net, "x": x, "y": y, "dir": tmp_path_factory.mktemp(arch)}


# ---------------------------------------------------------------- building


@pytest.mark.parametrize("arch", ARCHS)
def test_trainable_params_match_published(arch):
    net = N.build_network(arch, num_classes=1000)
    n = N.count_trainable_params(net)
    assert abs(n - PUBLISHED_PARAMS[arch]) <= 0.005 * PUBLISHED_PARAMS[arch], n
    # mindcv also holds BatchNorm moving statistics; they are not counted
    assert n < sum(int(p.size) for p in net.get_parameters())
    assert not net.training


def test_same_seed_same_weights_other_seed_other_weights():
    def weights(seed):
        return {p.name: p.asnumpy() for p in N.build_network("efficientnet_b0", NUM_CLASSES, seed).get_parameters()}

    a, b, c = weights(0), weights(0), weights(1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["features.0.weight"], c["features.0.weight"])


def test_unknown_arch_lists_the_valid_names():
    with pytest.raises(UserError) as err:
        N.build_network("not_a_network")
    for arch in ARCHS:  # the carded ones are named in the fix
        assert arch in str(err.value)


def test_importing_needs_no_mindspore():
    code = (
        "import sys; sys.modules['mindspore'] = None; sys.modules['mindcv'] = None\n"
        "import harness.models.mindspore_net as n\n"
        "from harness.models.cards import CARDS\n"
        "assert tuple(CARDS) == ('seresnext50_32x4d', 'xception', 'efficientnet_b0')\n"
        "try:\n    n.build_network('nope')\nexcept n.UserError:\n    pass\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})


# ------------------------------------------------- padding semantics (tiny)
# (these spell the padding out in numpy; the independent check against timm
# itself, at sizes where the padding matters, is in test_reference_parity.py)


def _np_maxpool(x, k, s, pads):
    """Max pool with -inf padding (left, right, top, bottom), VALID after padding."""
    left, right, top, bottom = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=-np.inf)
    oh, ow = (xp.shape[2] - k) // s + 1, (xp.shape[3] - k) // s + 1
    out = np.empty(x.shape[:2] + (oh, ow), dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = xp[:, :, i * s:i * s + k, j * s:j * s + k].max(axis=(2, 3))
    return out


def _torch_ceil_pool_out(h, k=3, s=2):
    return -(-(h - k) // s) + 1  # ceil((h - k) / s) + 1, padding 0


def _np_conv(x, w, s, p, group):
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    o, ipg, kh, kw = w.shape
    oh, ow = (xp.shape[2] - kh) // s + 1, (xp.shape[3] - kw) // s + 1
    out = np.zeros((x.shape[0], o, oh, ow))
    opg = o // group
    for oc in range(o):
        g = oc // opg
        xs = xp[:, g * ipg:(g + 1) * ipg]
        for i in range(oh):
            for j in range(ow):
                out[:, oc, i, j] = (xs[:, :, i * s:i * s + kh, j * s:j * s + kw] * w[oc]).sum(axis=(1, 2, 3))
    return out


@pytest.mark.parametrize("size", [7, 8])
def test_seresnext_pool0_is_ceil_mode(size):
    net = N.build_network("seresnext50_32x4d", num_classes=NUM_CLASSES)
    x = np.random.default_rng(size).standard_normal((1, 2, size, size)).astype(np.float32)
    got = net.pool0(ms.Tensor(x)).asnumpy()
    n = _torch_ceil_pool_out(size)
    assert got.shape == (1, 2, n, n)
    np.testing.assert_array_equal(got, _np_maxpool(x, 3, 2, (0, 1, 0, 1))[:, :, :n, :n])


def test_xception_strided_pools_pad_symmetrically():
    net = N.build_network("xception", num_classes=NUM_CLASSES)
    x = np.random.default_rng(0).standard_normal((1, 2, 8, 8)).astype(np.float32)
    pools = [b.rep[len(b.rep) - 1] for b in net.blocks if b.skip is not None]
    assert len(pools) == 4
    got = pools[0](ms.Tensor(x)).asnumpy()
    np.testing.assert_array_equal(got, _np_maxpool(x, 3, 2, (1, 1, 1, 1)))


@pytest.mark.parametrize("where", ["stem", "depthwise_k5"])
def test_efficientnet_stride2_convs_pad_symmetrically(where):
    net = N.build_network("efficientnet_b0", num_classes=NUM_CLASSES)
    conv = net.features[0] if where == "stem" else net.features[5][0].block[3]
    k = conv.kernel_size[0]
    assert conv.stride[-1] == 2 and k == (3 if where == "stem" else 5)
    c = conv.in_channels
    x = np.random.default_rng(0).standard_normal((1, c, 8, 8)).astype(np.float32)
    got = conv(ms.Tensor(x)).asnumpy()
    want = _np_conv(x.astype(np.float64), conv.weight.asnumpy().astype(np.float64), 2, k // 2, conv.group)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


# ------------------------------------------------------------------ export


def test_onnx_export_matches_mindspore(small):
    onnx = pytest.importorskip("onnx")
    path = N.export(small["net"], small["x"].shape, "ONNX", small["dir"] / "model")
    assert path == small["dir"] / "model.onnx" and path.is_file()
    assert path.stat().st_mode & 0o777 == 0o644
    # the padding fixes survive the export: explicit pads, never SAME_UPPER
    graph = onnx.load(str(path)).graph
    for node in graph.node:
        if node.op_type in ("MaxPool", "Conv"):
            attrs = {a.name: a for a in node.attribute}
            strides = list(attrs["strides"].ints) if "strides" in attrs else [1, 1]
            if strides != [1, 1]:
                auto_pad = attrs["auto_pad"].s.decode() if "auto_pad" in attrs else "NOTSET"
                assert auto_pad in ("NOTSET", "VALID"), f"{small['arch']}: {node.op_type} {node.name} {auto_pad}"
    if small["arch"] != "efficientnet_b0":
        assert any(node.op_type == "Pad" for node in graph.node)

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert list(inp.shape) == list(small["x"].shape)
    assert inp.name == "image" and [o.name for o in sess.get_outputs()] == ["class"]
    (got,) = sess.run(None, {inp.name: small["x"]})
    assert got.shape == (1, NUM_CLASSES)
    _assert_same_logits(got, small["y"], f"{small['arch']} ONNX Runtime vs MindSpore")


def test_mindir_export_writes_a_file(small):
    path = N.export(small["net"], small["x"].shape, "mindir", small["dir"] / "model.mindir")
    assert path == small["dir"] / "model.mindir"
    assert path.stat().st_size > 4 * N.count_trainable_params(small["net"]) * 0.9
    assert path.stat().st_mode & 0o777 == 0o644
    assert not [p for p in small["dir"].iterdir() if p.name.startswith(".export-")]


def test_same_net_exports_twice(tmp_path):
    # MindSpore caches the graph compiled for export and its ONNX converter
    # mutates it: a second export of the same cell at the same shape used to
    # fail ("i: 6 out of range: 6 ... BatchNorm").
    net = N.build_network("efficientnet_b0", num_classes=NUM_CLASSES)
    first = N.export(net, (1, 3, 32, 32), "ONNX", tmp_path / "a")
    second = N.export(net, (1, 3, 32, 32), "ONNX", tmp_path / "a.onnx")
    assert first == second == tmp_path / "a.onnx" and second.stat().st_mode & 0o777 == 0o644


def test_export_rejects_bad_format_and_shape(tmp_path):
    net = N.build_network("efficientnet_b0", num_classes=NUM_CLASSES)
    with pytest.raises(UserError, match="ONNX"):
        N.export(net, (1, 3, 32, 32), "TFLITE", tmp_path / "m")
    with pytest.raises(UserError, match="fixed"):
        N.export(net, (-1, 3, 32, 32), "ONNX", tmp_path / "m")
    with pytest.raises(UserError) as err:  # fails inside MindSpore: 4 channels into a 3-channel stem
        N.export(net, (1, 4, 32, 32), "ONNX", tmp_path / "m")
    assert "efficientnet_b0" in str(err.value) and str(tmp_path / "m.onnx") in str(err.value)
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(small):
    ckpt = small["dir"] / "model.ckpt"
    ms.save_checkpoint(small["net"], str(ckpt))
    fresh = N.build_network(small["arch"], num_classes=NUM_CLASSES, seed=7)
    name, param = next(iter(fresh.parameters_and_names()))
    assert not np.array_equal(param.asnumpy(), dict(small["net"].parameters_and_names())[name].asnumpy())
    N.load_checkpoint(fresh, ckpt)
    assert not fresh.training
    np.testing.assert_allclose(N.predict(fresh, small["x"]), small["y"], rtol=0, atol=1e-6 * np.abs(small["y"]).max())


@pytest.fixture(scope="module")
def effnet_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "efficientnet_b0.ckpt"
    ms.save_checkpoint(N.build_network("efficientnet_b0", num_classes=NUM_CLASSES), str(path))
    return path


@pytest.mark.parametrize("keep", [0.5, 0.999, 0.0])
def test_truncated_checkpoint_is_a_user_error(effnet_ckpt, tmp_path, keep):
    data = effnet_ckpt.read_bytes()
    bad = tmp_path / "truncated.ckpt"
    bad.write_bytes(data[: int(len(data) * keep)])
    net = N.build_network("efficientnet_b0", num_classes=NUM_CLASSES)
    with pytest.raises(UserError) as err:
        N.load_checkpoint(net, bad)
    assert str(bad) in str(err.value)


def test_checkpoint_of_another_arch_is_a_user_error(effnet_ckpt):
    net = N.build_network("xception", num_classes=NUM_CLASSES)
    with pytest.raises(UserError) as err:
        N.load_checkpoint(net, effnet_ckpt)
    msg = str(err.value)
    assert str(effnet_ckpt) in msg
    assert "missing keys 236" in msg and "unexpected keys 311" in msg
    assert "conv1.weight" in msg and "features.0.weight" in msg
    assert "... and 226 more" in msg


def test_checkpoint_with_other_num_classes_is_a_user_error(effnet_ckpt):
    net = N.build_network("efficientnet_b0", num_classes=NUM_CLASSES + 1)
    with pytest.raises(UserError) as err:
        N.load_checkpoint(net, effnet_ckpt)
    assert str(effnet_ckpt) in str(err.value)
    assert "wrong shapes" in str(err.value) and "mlp_head.weight" in str(err.value)


def test_missing_checkpoint_is_a_user_error(tmp_path):
    net = N.build_network("efficientnet_b0", num_classes=NUM_CLASSES)
    with pytest.raises(UserError) as err:
        N.load_checkpoint(net, tmp_path / "nope.ckpt")
    assert str(tmp_path / "nope.ckpt") in str(err.value)
