"""A suite's network in PyTorch, for the torch runner.

- ``source.kind: pytorch``: the timm model itself (with source.checkpoint).
- ``source.kind: mindcv``: the card's timm reference (``legacy_seresnext50_32x4d``
  for mindcv's ``seresnext50_32x4d``; the card's fixes make mindcv's network
  compute the reference's function, DESIGN.md "Known traps"), carrying:
  - a ``.pth`` checkpoint as it is (it has the reference's names);
  - a MindSpore ``.ckpt`` renamed back onto the reference's names by the
    card's weight rules run in reverse (:func:`mindcv_to_timm`); this reads the
    ``.ckpt`` with MindSpore, so without it the case skips naming the extra;
  - no checkpoint: the reference at its own random initialisation (seed
    ``source.seed``). Its compute is the suite network's, its weights are not;
    the result says so (``torch_weights``) and accuracy skips as for every
    randomly initialised network.

  An architecture with no timm reference, or a ``.ckpt`` of one whose card maps
  no names, is a skip that says why.

torch and timm are imported inside the functions.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from harness.errors import CaseSkipped, UserError
from harness.models import torch_net, weights
from harness.models.cards import CARDS, reference_of

MINDSPORE_INSTALL = "pip install -e '.[mindspore]' (mindspore, mindcv)"
TORCH_INSTALL = "pip install -e '.[torch]' (torch, torchvision, timm)"


def _absent(mod: str) -> bool:
    """Not importable here: not installed, or hidden or broken so that even looking it up fails
    (a None left in sys.modules, an import hook that refuses it)."""
    try:
        return importlib.util.find_spec(mod) is None
    except (ImportError, ValueError):
        return True


def need_mindspore(what: str) -> None:
    """A CaseSkipped naming the extra when MindSpore or mindcv is not installed."""
    for mod in ("mindspore", "mindcv"):
        if _absent(mod):
            raise CaseSkipped(f"{what} needs {mod}, which is not installed: {MINDSPORE_INSTALL}")


def need_torch(what: str) -> None:
    for mod in ("torch", "timm"):
        if _absent(mod):
            raise CaseSkipped(f"{what} needs {mod}, which is not installed: {TORCH_INSTALL}")


def mindcv_to_timm(arch: str, timm_state: dict[str, np.ndarray], ms_params: dict[str, np.ndarray],
                   path: Path) -> dict[str, np.ndarray]:
    """mindcv-named parameters onto the timm reference's names: the card's rules
    (timm -> mindcv) applied to the reference's own keys, read backwards. Every
    reference tensor must be found with its shape (a 1x1 convolution stored for a
    dense layer is reshaped); else a UserError listing the keys."""
    forward = weights.timm_to_mindcv(arch, timm_state)  # {mindcv name: (timm name, timm array)}
    out, missing, wrong = {}, [], []
    for ms_name, (timm_name, ref) in forward.items():
        if ms_name not in ms_params:
            missing.append(ms_name)
            continue
        v = np.asarray(ms_params[ms_name])
        if v.shape != ref.shape:
            if v.size != ref.size:
                wrong.append(f"{ms_name} (file {v.shape}, reference {ref.shape})")
                continue
            v = v.reshape(ref.shape)
        out[timm_name] = v
    if missing or wrong:
        parts = [f"missing {len(missing)}: {', '.join(missing[:8])}"] if missing else []
        parts += [f"wrong shapes {len(wrong)}: {', '.join(wrong[:8])}"] if wrong else []
        raise UserError(f"the checkpoint does not fit {reference_of(arch)} through {arch}'s card: " + "; ".join(parts),
                        path=path, fix=f"use a mindcv {arch} checkpoint with the suite's num_classes")
    return out


def build(suite, checkpoint: Path | None) -> tuple[object, dict]:
    """(torch module in eval mode, what it is) for the suite's source."""
    src = suite.source
    need_torch("the torch runner")
    if src.kind == "pytorch":
        model = torch_net.build_model(src.arch, src.num_classes, checkpoint, seed=src.seed)
        return model, {"network": torch_net.timm_name(src.arch),
                       "weights": str(checkpoint) if checkpoint else f"random init (seed {src.seed})"}
    if src.kind != "mindcv":
        raise CaseSkipped(f"source.kind is {src.kind!r}: there is no PyTorch network to run (the torch runner "
                          "runs a pytorch or mindcv source)")
    import timm
    import torch

    card = CARDS.get(src.arch)
    name = reference_of(src.arch)
    if (card is None or card.reference is None) and not timm.is_model(name):
        raise CaseSkipped(f"mindcv {src.arch} has no timm reference (no model card names one and timm has no "
                          f"{name!r}): add a card with reference= in harness/models/cards.py")
    if checkpoint is None:
        model = torch_net.build_model(name, src.num_classes, None, seed=src.seed)
        return model, {"network": name, "weights": f"random init of the timm reference (seed {src.seed}); the "
                                                   f"suite's mindcv network is randomly initialised too, with "
                                                   "other values: same compute, different weights"}
    if weights.is_torch_file(checkpoint):
        model = torch_net.build_model(name, src.num_classes, checkpoint, seed=src.seed)
        return model, {"network": name, "weights": str(checkpoint)}
    if card is None or not card.maps_weights:
        raise CaseSkipped(f"no converter from mindcv {src.arch}'s parameter names to timm {name}'s (its card maps "
                          f"none): give source.checkpoint as a {name} .pth, or add weight_rules to its card")
    need_mindspore(f"reading the MindSpore checkpoint {checkpoint}")
    model = torch_net.build_model(name, src.num_classes, None, seed=src.seed)
    own = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    conv = mindcv_to_timm(src.arch, own, weights.read_mindspore_checkpoint(checkpoint), Path(checkpoint))
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in conv.items()}, strict=False)
    model.eval()
    return model, {"network": name, "weights": f"{checkpoint} (converted from mindcv names)"}
