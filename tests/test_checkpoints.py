"""harness.models.weights: timm/Cadene .pth and mindcv .ckpt into the harness's MindSpore networks.

The name mapping is checked against the real models: every tensor of timm's
reference model lands on a parameter of mindcv's network with the right shape.
"""

from __future__ import annotations

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
pytest.importorskip("mindcv")
torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from harness.models import weights as C  # noqa: E402
from harness.models import mindspore_net as N  # noqa: E402
from harness.errors import UserError  # noqa: E402
from harness.models.cards import CARDS, guess_arch  # noqa: E402
from harness.models.convert import convert  # noqa: E402

ARCHS = tuple(CARDS)  # the carded architectures
REFERENCES = {a: c.reference for a, c in CARDS.items()}

NUM_CLASSES = 10
EXPECTED_TENSORS = {"seresnext50_32x4d": 331, "xception": 236, "efficientnet_b0": 311}


@pytest.fixture(scope="module", autouse=True)
def _context():
    N.set_context("CPU")


@pytest.fixture(scope="module")
def nets():
    return {a: N.build_network(a, NUM_CLASSES) for a in ARCHS}


@pytest.fixture(scope="module")
def pths(tmp_path_factory):
    d = tmp_path_factory.mktemp("pth")
    out = {}
    for arch, name in REFERENCES.items():
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES)
        out[arch] = d / f"{name}.pth"
        torch.save(model.state_dict(), out[arch])
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_every_timm_tensor_maps_onto_mindcv(arch, nets, pths):
    state = C.read_torch_state_dict(pths[arch])
    named = C.timm_to_mindcv(arch, state)
    params = C.fit_params(nets[arch], named, pths[arch])
    assert len(params) == EXPECTED_TENSORS[arch] == len(list(nets[arch].get_parameters()))
    # only num_batches_tracked has no counterpart
    assert {orig for orig, _ in named.values()} == {k for k in state if not k.endswith("num_batches_tracked")}
    for k, (orig, v) in named.items():
        np.testing.assert_array_equal(params[k].reshape(-1), v.reshape(-1), err_msg=f"{orig} -> {k}")


def test_load_pth_then_ckpt_round_trip(nets, pths, tmp_path):
    net = N.build_network("efficientnet_b0", NUM_CLASSES, seed=3)
    N.load_checkpoint(net, pths["efficientnet_b0"])
    state = C.read_torch_state_dict(pths["efficientnet_b0"])
    got = {p.name: p.asnumpy() for p in net.get_parameters()}
    np.testing.assert_array_equal(got["features.3.0.block.0.weight"], state["blocks.0.0.conv_dw.weight"])
    np.testing.assert_array_equal(got["features.11.moving_variance"], state["bn2.running_var"])
    ckpt = convert(pths["efficientnet_b0"], "efficientnet_b0", tmp_path / "e.ckpt")
    again = N.build_network("efficientnet_b0", NUM_CLASSES, seed=4)
    N.load_checkpoint(again, ckpt)
    assert all(np.array_equal(p.asnumpy(), got[p.name]) for p in again.get_parameters())


def test_wrapped_and_dataparallel_state_dicts_load(pths, tmp_path):
    """A DataParallel ("module."-prefixed) state dict inside {"state_dict": ...}
    loads every tensor; on a network of its own (the shared `nets` stay as built)."""
    state = torch.load(pths["xception"], weights_only=True)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    net = N.build_network("xception", NUM_CLASSES, seed=5)
    expected = {k: v for k, (_, v) in C.timm_to_mindcv("xception", C.read_torch_state_dict(pths["xception"])).items()}
    before = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    assert any(not np.array_equal(before[k].reshape(-1), v.reshape(-1)) for k, v in expected.items())
    N.load_checkpoint(net, wrapped)
    got = {p.name: p.asnumpy() for p in net.get_parameters()}
    assert set(expected) == set(got)
    for k, v in expected.items():
        np.testing.assert_array_equal(got[k].reshape(-1), v.reshape(-1), err_msg=k)


@pytest.mark.parametrize("keep", [0.5, 0.99, 0.0])
def test_truncated_pth_is_a_user_error(pths, tmp_path, keep, nets):
    data = pths["efficientnet_b0"].read_bytes()
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(UserError) as err:
        N.load_checkpoint(nets["efficientnet_b0"], bad)
    assert str(bad) in str(err.value) and "truncated" in str(err.value)


def test_pth_of_another_model_names_it(pths, nets):
    with pytest.raises(UserError) as err:
        N.load_checkpoint(nets["seresnext50_32x4d"], pths["xception"])
    msg = str(err.value)
    assert str(pths["xception"]) in msg
    assert "looks like a checkpoint of xception" in msg
    assert "missing keys 331" in msg and "unexpected keys" in msg


def test_missing_unexpected_and_wrong_shape_keys_are_listed(pths, nets, tmp_path):
    state = torch.load(pths["efficientnet_b0"], weights_only=True)
    del state["conv_head.weight"]
    state["extra.weight"] = torch.zeros(3)
    state["classifier.weight"] = torch.zeros(11, 1280)
    bad = tmp_path / "edited.pth"
    torch.save(state, bad)
    with pytest.raises(UserError) as err:
        N.load_checkpoint(nets["efficientnet_b0"], bad)
    msg = str(err.value)
    assert "missing keys 1: features.10.weight" in msg
    assert "unexpected keys 1: extra.weight" in msg
    assert "wrong shapes 1: classifier.weight -> mlp_head.weight (file (11, 1280), network (10, 1280))" in msg


def test_pth_without_torch_is_a_clear_error(pths, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_torch(name, *a, **k):
        if name == "torch":
            raise ImportError("no torch")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(UserError, match="needs torch"):
        C.read_torch_state_dict(pths["xception"])


def test_guess_arch():
    assert guess_arch(["block1.skip.weight"]) == "xception"
    assert guess_arch(["features.3.0.block.0.weight"]) == "efficientnet_b0"
    assert guess_arch(["layer0.conv1.weight"]) == "seresnext50_32x4d"
    assert guess_arch(["fc.weight"]) is None
