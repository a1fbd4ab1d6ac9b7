"""Weights from files: MindSpore ``.ckpt`` and PyTorch ``.pth`` into the harness's networks.

The harness's MindSpore networks keep mindcv's parameter names. A ``.ckpt``
written by mindcv (or by :func:`convert`) loads as it is. A PyTorch state dict
with the reference implementations' names (Cadene ``pretrained-models`` /
timm ``legacy_seresnext50_32x4d``, timm ``legacy_xception``, timm
``efficientnet_b0``) is renamed onto mindcv's names by the tables below
(REFERENCE.md, "Parameter names, timm -> mindcv"; checked tensor for tensor
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

#: mindcv architecture -> the timm model whose state dict maps onto it
TIMM_MODELS = {
    "seresnext50_32x4d": "legacy_seresnext50_32x4d",
    "xception": "legacy_xception",
    "efficientnet_b0": "efficientnet_b0",
}

TORCH_SUFFIXES = (".pth", ".pt", ".pth.tar", ".bin")
MINDSPORE_SUFFIXES = (".ckpt",)

# Keys a file may carry that hold no weights of the network.
_IGNORED_TORCH_SUFFIXES = (".num_batches_tracked",)

# One characteristic key per architecture, in each naming, to say which model
# a checkpoint that fits nothing was made for.
_SIGNATURES = {
    "seresnext50_32x4d": ("layer0.conv1.weight", "layer0.0.weight", "layer1.0.se_module."),
    "xception": ("block1.skip.weight", "blocks.0.skip.weight"),
    "efficientnet_b0": ("conv_stem.weight", "blocks.0.0.conv_dw.weight", "features.3.0.block.0.weight"),
}


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
                            "on a machine with torch: python -m harness.checkpoints ...)") from None
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
        from harness.networks import _cause

        raise UserError(
            f"cannot read MindSpore checkpoint (truncated or corrupt?): {_cause(exc, 300)}", path=path,
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


def _effnet_block(m: re.Match) -> str:
    stage, idx, layer = int(m.group(1)), m.group(2), m.group(3)
    if stage == 0:  # depthwise-separable stage
        order = {"conv_dw": 0, "bn1": 1, "se": 3, "conv_pw": 4, "bn2": 5}
    else:  # inverted-residual stages
        order = {"conv_pw": 0, "bn1": 1, "conv_dw": 3, "bn2": 4, "se": 6, "conv_pwl": 7, "bn3": 8}
    if layer not in order:
        return m.group(0)
    return f"features.{stage + 3}.{idx}.block.{order[layer]}."


# (pattern, replacement) applied in order to each key, before the BatchNorm suffixes
_RULES: dict[str, list[tuple[str, object]]] = {
    "seresnext50_32x4d": [
        (r"^layer0\.conv1\.", "layer0.0."),
        (r"^layer0\.bn1\.", "layer0.1."),
        (r"\.se_module\.fc1\.", ".se_module.conv_reduce."),
        (r"\.se_module\.fc2\.", ".se_module.conv_expand."),
        (r"^last_linear\.", "classifier."),
    ],
    "xception": [
        (r"^block(\d+)\.", lambda m: f"blocks.{int(m.group(1)) - 1}."),
        (r"^fc\.", "classifier."),
    ],
    "efficientnet_b0": [
        (r"^conv_stem\.", "features.0."),
        (r"^bn1\.", "features.1."),
        (r"^conv_head\.", "features.10."),
        (r"^bn2\.", "features.11."),
        (r"^classifier\.", "mlp_head."),
        (r"^blocks\.(\d+)\.(\d+)\.(\w+)\.", _effnet_block),
    ],
}

_BN_SUFFIXES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def timm_to_mindcv(arch: str, state: dict[str, np.ndarray]) -> dict[str, tuple[str, np.ndarray]]:
    """Rename a timm/Cadene state dict onto mindcv's names: ``{mindcv name: (file name, array)}``.

    Keys no rule matches keep their name (and are reported as unexpected
    when loaded); ``num_batches_tracked`` has no counterpart and is dropped.
    """
    if arch not in _RULES:
        raise UserError(f"no PyTorch name mapping for architecture {arch!r}",
                        fix=f"use one of: {', '.join(_RULES)}")
    bn_modules = {k[: -len(".running_mean")] for k in state if k.endswith(".running_mean")}
    out: dict[str, tuple[str, np.ndarray]] = {}
    for key, value in state.items():
        if key.endswith(_IGNORED_TORCH_SUFFIXES):
            continue
        module, _, leaf = key.rpartition(".")
        if module in bn_modules and leaf in _BN_SUFFIXES:
            leaf = _BN_SUFFIXES[leaf]
        new = f"{module}.{leaf}." if module else f"{leaf}."
        for pattern, repl in _RULES[arch]:
            new = re.sub(pattern, repl, new)
        out[new[:-1]] = (key, value)
    return out


def guess_arch(keys) -> str | None:
    """The architecture whose characteristic keys a checkpoint holds, if any."""
    keys = list(keys)
    for arch, marks in _SIGNATURES.items():
        if any(k.startswith(mark) for mark in marks for k in keys):
            return arch
    return None


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
                f"{TIMM_MODELS.get(arch, arch)} .pth)",
        )
    return out


def read_for(net, path: str | Path, *, ignore=()) -> dict[str, np.ndarray]:
    """The weights in ``path`` (``.ckpt`` or ``.pth``), renamed and checked for ``net``."""
    path = Path(path)
    arch = getattr(net, "_harness_arch", None)
    if is_torch_file(path):
        state = read_torch_state_dict(path)
        if arch not in _RULES:
            raise UserError(f"no PyTorch name mapping for {arch!r}", path=path,
                            fix=f"PyTorch weights load into: {', '.join(_RULES)}")
        named = timm_to_mindcv(arch, state)
    else:
        named = {k: (k, v) for k, v in read_mindspore_checkpoint(path).items()}
    return fit_params(net, named, path, ignore=ignore)


def convert(pth: str | Path, arch: str, out: str | Path, num_classes: int | None = None) -> Path:
    """Write a timm/Cadene ``.pth`` as a mindcv-named MindSpore ``.ckpt``; returns ``out``."""
    import mindspore as ms

    from harness import networks

    state = read_torch_state_dict(pth)
    if num_classes is None:
        head = {"seresnext50_32x4d": "last_linear.bias", "xception": "fc.bias",
                "efficientnet_b0": "classifier.bias"}.get(arch)
        num_classes = int(state[head].shape[0]) if head in state else 1000
    net = networks.build_network(arch, num_classes)
    params = fit_params(net, timm_to_mindcv(arch, state), Path(pth))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in params.items()], str(out))
    return out


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m harness.checkpoints",
                                description="Convert a timm/Cadene PyTorch .pth into a mindcv-named MindSpore .ckpt")
    p.add_argument("pth")
    p.add_argument("arch", choices=sorted(_RULES))
    p.add_argument("out")
    p.add_argument("--num-classes", type=int)
    a = p.parse_args(argv)
    try:
        print(convert(a.pth, a.arch, a.out, a.num_classes))
    except UserError as exc:
        print(f"error: {exc}")
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
