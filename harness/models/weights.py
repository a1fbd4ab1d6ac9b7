"""Weights from files: MindSpore ``.ckpt`` and PyTorch ``.pth`` into the harness's networks.

The harness's MindSpore networks keep mindcv's parameter names. A ``.ckpt``
written by mindcv (or by :func:`convert`) loads as it is. A PyTorch state dict
with the reference implementations' names (Cadene ``pretrained-models`` /
timm ``legacy_seresnext50_32x4d``, timm ``legacy_xception``, timm
``efficientnet_b0``) is renamed onto mindcv's names
(each model card's weight_rules, :mod:`harness.models.cards`; REFERENCE.md,
"Parameter names, timm -> mindcv"; checked tensor for tensor
by tests/test_checkpoints.py against the real timm and mindcv models).

MindSpore ModelZoo checkpoints (``models/official/cv/...``) use the ModelZoo's
own network definitions, whose parameter names differ from mindcv's and are
not mapped here: converting them needs the ModelZoo network source, which the
harness does not carry. Such a file is rejected with the keys it lacks.

Every problem (unreadable or truncated file, a checkpoint of another model,
missing / unexpected keys, wrong shapes) raises :class:`UserError` naming the
file and the keys.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from harness.errors import UserError
from harness.models.cards import CARDS, guess_arch, reference_of
from harness.models.mindspore_fixes import ms_cause

TORCH_SUFFIXES = (".pth", ".pt", ".pth.tar", ".bin")
MINDSPORE_SUFFIXES = (".ckpt",)

# Keys a file may carry that hold no weights of the network.
_IGNORED_TORCH_SUFFIXES = (".num_batches_tracked",)

# --------------------------------------------------------------------------
# reading


def is_torch_file(path: str | Path) -> bool:
    name = Path(path).name.lower()
    return name.endswith(TORCH_SUFFIXES)


def read_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A PyTorch checkpoint's tensors as float32 numpy arrays (names as in the file).

    Uses ``torch.load(weights_only=True)``: no code in the file runs. Accepts a
    bare state dict or one wrapped under ``state_dict`` / ``model`` (training
    scripts), and strips DataParallel's ``module.`` prefix.
    """
    path = Path(path)
    _check_file(path, "PyTorch checkpoint")
    try:
        import torch
    except ImportError:
        raise UserError("reading a PyTorch .pth checkpoint needs torch", path=path,
                        fix="pip install 'modelzoo-harness[torch]' (or convert the file to a MindSpore .ckpt "
                            "on a machine with torch: python -m harness.models.convert ...)") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle errors, not a torch file at all
        first = " ".join(str(exc).split())[:300]
        raise UserError(
            f"cannot read PyTorch checkpoint (truncated, corrupt, or holds more than tensors?): "
            f"{type(exc).__name__}: {first}", path=path,
            fix="re-copy or re-download the file and compare its size/sha256 with the source; it must be a "
                "state dict saved with torch.save",
        ) from None
    for wrapper in ("state_dict", "model", "state_dict_ema", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not obj:
        raise UserError(f"PyTorch checkpoint holds no state dict (found {type(obj).__name__})", path=path,
                        fix="save the weights with torch.save(model.state_dict(), path)")
    out = {}
    for key, value in obj.items():
        if not hasattr(value, "detach"):
            continue  # bookkeeping (epoch numbers, arch strings) beside the tensors
        key = key[len("module."):] if key.startswith("module.") else key
        t = value.detach().cpu()
        out[key] = t.float().numpy() if t.is_floating_point() else t.numpy()
    if not out:
        raise UserError("PyTorch checkpoint holds no tensors", path=path,
                        fix="save the weights with torch.save(model.state_dict(), path)")
    return out


def read_mindspore_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    _check_file(path, "MindSpore checkpoint")
    import mindspore as ms

    try:
        params = ms.load_checkpoint(str(path))
    except Exception as exc:  # truncated, corrupt, not a checkpoint at all
        raise UserError(
            f"cannot read MindSpore checkpoint (truncated or corrupt?): {ms_cause(exc, 300)}", path=path,
            fix="re-copy or re-create the file; it must be a complete .ckpt written by mindspore.save_checkpoint",
        ) from None
    if not params:
        raise UserError("checkpoint holds no parameters", path=path,
                        fix="re-create the file with mindspore.save_checkpoint")
    return {k: v.asnumpy() for k, v in params.items()}


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise UserError(f"{what} not found", path=path, fix="check the path (source.checkpoint in the suite)")
    if not path.is_file():
        raise UserError(f"{what} path is not a file", path=path, fix="give the path of the file itself")


# --------------------------------------------------------------------------
# renaming timm / Cadene names onto mindcv's


_BN_SUFFIXES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def timm_to_mindcv(arch: str, state: dict[str, np.ndarray]) -> dict[str, tuple[str, np.ndarray]]:
    """Rename a timm/Cadene state dict onto mindcv's names: ``{mindcv name: (file name, array)}``.

    Keys no rule matches keep their name (and are reported as unexpected
    when loaded); ``num_batches_tracked`` has no counterpart and is dropped.
    """
    card = CARDS.get(arch)
    if card is None or not card.maps_weights:
        raise UserError(f"no PyTorch name mapping for architecture {arch!r}",
                        fix=f"use one of: {', '.join(mapped_archs())}")
    bn_modules = {k[: -len(".running_mean")] for k in state if k.endswith(".running_mean")}
    out: dict[str, tuple[str, np.ndarray]] = {}
    for key, value in state.items():
        if key.endswith(_IGNORED_TORCH_SUFFIXES):
            continue
        module, _, leaf = key.rpartition(".")
        if module in bn_modules and leaf in _BN_SUFFIXES:
            leaf = _BN_SUFFIXES[leaf]
        new = f"{module}.{leaf}." if module else f"{leaf}."
        for pattern, repl in card.weight_rules:
            new = re.sub(pattern, repl, new)
        out[new[:-1]] = (key, value)
    return out


def mapped_archs() -> list[str]:
    """Architectures whose card maps reference (timm/Cadene) weight names."""
    return [a for a, c in CARDS.items() if c.maps_weights]


# --------------------------------------------------------------------------
# loading


def _key_list(keys: list[str], limit: int = 10) -> str:
    shown = ", ".join(keys[:limit])
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"{len(keys)}: {shown}{more}"


def fit_params(net, named: dict[str, tuple[str, np.ndarray]], path: Path, *, ignore=()) -> dict[str, np.ndarray]:
    """Match ``named`` ({network name: (name in file, array)}) against ``net``'s parameters.

    Returns {network name: array} with every parameter present and of the
    right shape; a 1x1 convolution stored for a dense layer (or the reverse)
    is reshaped. Anything missing, unexpected or of the wrong shape raises
    :class:`UserError` listing the keys (as the file names them).
    """
    arch = getattr(net, "_harness_arch", None) or type(net).__name__
    own = {p.name: tuple(p.shape) for p in net.get_parameters()}
    missing = [k for k in own if k not in named]
    unexpected = [orig for k, (orig, _) in named.items() if k not in own and not orig.startswith(tuple(ignore))]
    wrong, out = [], {}
    for k, shape in own.items():
        if k not in named:
            continue
        orig, value = named[k]
        value = np.asarray(value)
        if tuple(value.shape) != shape:
            squeezed = tuple(d for d in value.shape if d != 1) == tuple(d for d in shape if d != 1)
            if squeezed and value.size == int(np.prod(shape)):
                value = value.reshape(shape)
            else:
                label = orig if orig == k else f"{orig} -> {k}"
                wrong.append(f"{label} (file {tuple(value.shape)}, network {shape})")
                continue
        out[k] = value
    problems = []
    if missing and len(missing) == len(own):
        other = guess_arch(orig for orig, _ in named.values())
        hint = f" (it looks like a checkpoint of {other})" if other and other != arch else \
            " (a checkpoint of another architecture, or ModelZoo parameter names?)"
        problems.append(f"none of the network's parameters is in the file{hint}")
    if missing:
        problems.append(f"missing keys {_key_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_key_list(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes {_key_list(wrong)}")
    if problems:
        raise UserError(
            f"checkpoint does not fit {arch} ({len(own)} parameters): " + "; ".join(problems),
            path=path,
            fix=f"use a checkpoint of {arch} with the same num_classes (a mindcv .ckpt, or a timm/Cadene "
                f"{reference_of(arch)} .pth)",
        )
    return out


def read_for(net, path: str | Path, *, ignore=()) -> dict[str, np.ndarray]:
    """The weights in ``path`` (``.ckpt`` or ``.pth``), renamed and checked for ``net``."""
    path = Path(path)
    arch = getattr(net, "_harness_arch", None)
    if is_torch_file(path):
        state = read_torch_state_dict(path)
        if arch not in mapped_archs():
            raise UserError(f"no PyTorch name mapping for {arch!r}", path=path,
                            fix=f"PyTorch weights load into: {', '.join(mapped_archs())}")
        named = timm_to_mindcv(arch, state)
    else:
        named = {k: (k, v) for k, v in read_mindspore_checkpoint(path).items()}
    return fit_params(net, named, path, ignore=ignore)
