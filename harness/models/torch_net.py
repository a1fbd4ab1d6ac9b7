"""The PyTorch source path (seed 004): a ``.pth`` into a timm model, exported to ONNX.

The Ascend ACL pipeline exports the Cadene SE-ResNeXt50 with
``torch.onnx.export``, input named ``image`` and output ``class``, so that
``atc --input_shape="image:16,3,224,224"`` works on it. Here the batch
dimension is dynamic (one file serves every batch size, and ``atc`` can fix
or gear it), the opset is configurable (default 11: what the document's
PyTorch 1.6 / ONNX 1.7 era wrote and what older CANN releases accept).

torch and timm are imported inside the functions: importing this module works
on a host without them.
"""

from __future__ import annotations

import difflib
import shutil
import tempfile
from pathlib import Path

import numpy as np

from harness.errors import CaseSkipped, UserError
from harness.fsio import move_into_place
from harness.models.cards import reference_of
from harness.models.weights import read_torch_state_dict

DEFAULT_OPSET = 11


def _need_torch():
    try:
        import timm
        import torch
    except ImportError as exc:  # an extra this install lacks: the case skips, naming it (never an error)
        raise CaseSkipped(f"the PyTorch path needs torch and timm, not installed here ({exc}): "
                          "pip install -e '.[torch]' (torch, torchvision, timm)") from None
    return torch, timm


def timm_name(arch: str) -> str:
    """The timm model for a harness architecture name (timm names pass through)."""
    return reference_of(arch)


def build_model(arch: str, num_classes: int = 1000, checkpoint: str | Path | None = None, seed: int = 0):
    """A timm model in eval mode; weights from ``checkpoint`` (.pth) or random from ``seed``.

    ``arch`` is a timm name (``legacy_seresnext50_32x4d``) or a harness one
    (``seresnext50_32x4d``, mapped to its timm reference). No download ever
    happens (``pretrained=False``).
    """
    torch, timm = _need_torch()
    name = timm_name(arch)
    torch.manual_seed(int(seed))
    try:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    except RuntimeError as exc:  # timm: "Unknown model (...)"

        near = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise UserError(f"timm has no model {name!r} ({exc})" + (f"; did you mean {near}?" if near else ""),
                        fix="set source.arch to a timm model name") from None
    if checkpoint is not None:
        path = Path(checkpoint)
        state = {k: torch.from_numpy(v) for k, v in read_torch_state_dict(path).items()}
        result = model.load_state_dict(state, strict=False)
        own = model.state_dict()
        wrong = [f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
                 for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
        missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
        problems = []
        if missing:
            problems.append(f"missing keys {len(missing)}: {', '.join(missing[:10])}")
        if result.unexpected_keys:
            problems.append(f"unexpected keys {len(result.unexpected_keys)}: "
                            f"{', '.join(result.unexpected_keys[:10])}")
        if wrong:
            problems.append(f"wrong shapes {len(wrong)}: {', '.join(wrong[:10])}")
        if problems:
            raise UserError(f"checkpoint does not fit timm {name} (num_classes {num_classes}): " + "; ".join(problems),
                            path=path, fix=f"use a {name} state dict with the same num_classes")
    model.eval()
    return model


def predict(model, x):
    """Logits of a torch model for a float32 NCHW numpy array, as numpy."""

    torch, _ = _need_torch()
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def export_onnx(model, out: str | Path, input_size: int, *, opset: int = DEFAULT_OPSET, channels: int = 3,
                dynamic_batch: bool = True, batch_size: int = 1) -> Path:
    """Export ``model`` to ONNX (input ``image``, output ``class``); returns the path written.

    Uses the TorchScript-based exporter (``dynamo=False``): it needs nothing
    beyond torch, and emits the classic opsets atc reads. The file is written
    beside ``out`` and moved into place, so a failure leaves no partial file.
    """
    torch, _ = _need_torch()
    out = Path(out)
    if out.suffix != ".onnx":
        out = out.with_name(out.name + ".onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(batch_size, channels, input_size, input_size)
    scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))
    try:
        tmp = scratch / out.name
        try:
            torch.onnx.export(
                model, (dummy,), str(tmp), input_names=["image"], output_names=["class"],
                opset_version=int(opset), dynamo=False, do_constant_folding=True,
                dynamic_axes={"image": {0: "batch"}, "class": {0: "batch"}} if dynamic_batch else None,
            )
        except Exception as exc:
            raise UserError(f"torch.onnx.export at opset {opset} failed: {type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:300]}", path=out,
                            fix="try another source.opset (11-17), or check the model") from None
        move_into_place(tmp, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def pth_to_onnx(pth: str | Path, arch: str, out: str | Path, input_size: int, *, num_classes: int = 1000,
                opset: int = DEFAULT_OPSET) -> Path:
    """The document's ``seresnext50_pth2onnx.py`` step: .pth -> timm model -> ONNX (dynamic batch)."""
    return export_onnx(build_model(arch, num_classes, pth), out, input_size, opset=opset)
