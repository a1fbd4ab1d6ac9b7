"""The three real architectures, built in MindSpore from mindcv, and their exports.

``build_network`` takes mindcv's ``seresnext50_32x4d``, ``xception`` and
``efficientnet_b0`` and fixes them at construction time so that they compute
the same function as the PyTorch reference implementations (timm
``legacy_seresnext50_32x4d``, ``legacy_xception``, ``efficientnet_b0``) and
export to ONNX:

- MindSpore's ``pad_mode="same"`` pads unevenly on even inputs (TF style),
  the references pad symmetrically. Stride-2 ``"same"`` convolutions (only
  EfficientNet-B0 has them) become explicit symmetric ``k // 2`` padding;
  Xception's stride-2 max pools get symmetric padding 1; SE-ResNeXt's
  ``pool0`` becomes a ceil-mode 3x3/2 max pool.
- Padded max pools are written as an explicit ``mint.nn.functional.pad``
  with ``-FLT_MAX`` followed by a VALID pool: the ONNX exporter cannot export
  MindSpore's padded / ceil-mode max pool or ``ops.pad``, but exports this as
  ONNX ``Pad`` + ``MaxPool``.
- EfficientNet-B0's MBConv adds its shortcut in place (``result += x``),
  which the ONNX exporter rejects ("InplaceAddExt"); the blocks get an
  out-of-place ``construct``.

No parameter is added, removed or renamed: the networks keep mindcv's
parameter names (a converter maps timm names onto them).

MindSpore and mindcv are imported inside the functions, so importing this
module works on a host without them.
"""

from __future__ import annotations

import functools
import os
import pathlib
import re
import shutil
import tempfile
from typing import Any

from harness.errors import UserError

ARCHS = ("seresnext50_32x4d", "xception", "efficientnet_b0")

_FORMATS = {"ONNX": ".onnx", "MINDIR": ".mindir"}
_DEVICES = ("CPU", "GPU", "Ascend")
_FLT_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max

# Keys a training checkpoint carries besides the network's own parameters
# (optimizer state, loss-scale and step bookkeeping). They are ignored when
# loading; any other key the network does not have is an error.
_TRAINING_STATE_PREFIXES = (
    "moments.", "accum.", "adam_m.", "adam_v.", "moment1.", "moment2.",
    "exp_avg.", "exp_avg_sq.", "global_step", "learning_rate", "momentum",
    "beta1_power", "beta2_power", "scale_sense", "current_iterator_step",
    "last_overflow_iterator_step", "epoch_num", "step_num",
)

_context_done = False


# --------------------------------------------------------------------------
# context


def set_context(device_target: str = "CPU") -> None:
    """GRAPH_MODE on ``device_target`` ("CPU", "GPU" or "Ascend"); idempotent.

    GRAPH_MODE because PYNATIVE fails on some operators with numpy 2.x.
    MindSpore fixes the device once chosen: asking for a different one later
    raises :class:`UserError`.
    """
    global _context_done
    target = str(device_target)
    canon = {d.lower(): d for d in _DEVICES}.get(target.lower())
    if canon is None:
        raise UserError(
            f"unknown MindSpore device target {device_target!r}",
            fix=f"use one of {', '.join(_DEVICES)}",
        )
    _om_path_default()
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        ms.set_device(canon)
    except RuntimeError as exc:
        current = ms.get_context("device_target")
        if current != canon:
            raise UserError(
                f"MindSpore already runs on {current}; cannot switch to {canon} in this process ({exc})",
                fix="call harness.networks.set_context() once, before building or running any network",
            ) from None
    _context_done = True


def _ensure_context() -> None:
    """GRAPH_MODE if nobody called :func:`set_context` (device left as is)."""
    if not _context_done:
        _om_path_default()
        import mindspore as ms

        ms.set_context(mode=ms.GRAPH_MODE)


def _om_path_default() -> None:
    """Keep MindSpore's failure dumps (``rank_0/om/analyze_fail.ir``) out of the cwd.

    MindSpore writes them under ``$MS_OM_PATH`` (read when a graph fails to
    compile), by default the current directory, i.e. often a source checkout.
    A value the user set is kept.
    """
    if not os.environ.get("MS_OM_PATH"):
        uid = getattr(os, "getuid", lambda: 0)()
        os.environ["MS_OM_PATH"] = os.path.join(tempfile.gettempdir(), f"harness-mindspore-{uid}")


def _cause(exc: BaseException, limit: int = 400) -> str:
    """One line from a MindSpore exception: its first paragraph, plus the dump it names."""
    text = str(exc)
    head = re.split(r"\n\s*\n|-{10,}", text, maxsplit=1)[0]
    cause = " ".join(head.split())[:limit] or type(exc).__name__
    dump = re.search(r"See file '([^']+)'", text)
    if dump:
        cause += f" (details: {dump.group(1)})"
    return cause


# --------------------------------------------------------------------------
# replacement cells (defined lazily: they subclass MindSpore classes)


@functools.lru_cache(maxsize=None)
def _cells() -> dict[str, type]:
    from mindspore import mint, nn
    from mindcv.models.efficientnet import MBConv

    class PaddedMaxPool2d(nn.Cell):
        """Max pool over an explicit ``-FLT_MAX`` pad (exports as ONNX Pad + MaxPool).

        ``pads`` is (left, right, top, bottom), as ``mint.nn.functional.pad``
        takes it for the last two dimensions.
        """

        def __init__(self, kernel_size: int, stride: int, pads: tuple[int, int, int, int]):
            super().__init__()
            self.pads = tuple(int(p) for p in pads)
            self.fill = -_FLT_MAX
            self.pool = nn.MaxPool2d(kernel_size=kernel_size, stride=stride, pad_mode="valid")

        def construct(self, x):
            x = mint.nn.functional.pad(x, self.pads, "constant", self.fill)
            return self.pool(x)

    class OutOfPlaceMBConv(MBConv):
        """mindcv's MBConv with the shortcut added out of place (ONNX-exportable)."""

        def construct(self, x):
            result = self.block(x)
            if self.shortcut:
                result = self.dropout(result)
                result = result + x
            return result

    class ExportView(nn.Cell):
        """A new cell around ``net`` for one export (parameter names unchanged).

        MindSpore caches the graph it compiles for export per cell and input
        shape, and its ONNX converter mutates that graph: exporting the same
        cell twice at the same shape fails ("i: 6 out of range: 6, cnode: ...
        BatchNorm"). A fresh cell per export gets a fresh compile.
        """

        def __init__(self, net):
            super().__init__(auto_prefix=False)
            self.net = net

        def construct(self, x):
            return self.net(x)

    return {"PaddedMaxPool2d": PaddedMaxPool2d, "OutOfPlaceMBConv": OutOfPlaceMBConv, "ExportView": ExportView}


def _replace_child(parent: Any, key: str, new: Any) -> None:
    from mindspore import nn

    if isinstance(parent, nn.SequentialCell) and key.isdigit():
        parent[int(key)] = new
    else:
        setattr(parent, key, new)


def _walk(net: Any):
    """(parent, child name, child) for every sub-cell, depth first; a snapshot."""
    out = []
    for _, cell in net.cells_and_names():
        for key, child in cell.name_cells().items():
            out.append((cell, key, child))
    return out


def _symmetric_stride2_convs(net: Any) -> int:
    """Stride>1 ``pad_mode="same"`` convolutions -> explicit symmetric k//2 padding."""
    from mindspore import nn

    n = 0
    for parent, key, conv in _walk(net):
        if type(conv) is not nn.Conv2d or conv.pad_mode != "same":
            continue
        stride = tuple(conv.stride[-2:]) if isinstance(conv.stride, tuple) else (conv.stride,) * 2
        if stride == (1, 1):
            continue  # odd kernel, stride 1: "same" is already symmetric
        kh, kw = conv.kernel_size
        if kh % 2 == 0 or kw % 2 == 0:
            continue
        dilation = tuple(conv.dilation[-2:]) if isinstance(conv.dilation, tuple) else (conv.dilation,) * 2
        new = nn.Conv2d(
            conv.in_channels, conv.out_channels, (kh, kw), stride=stride, pad_mode="pad",
            padding=(kh // 2, kh // 2, kw // 2, kw // 2), dilation=dilation, group=conv.group,
            has_bias=conv.has_bias, data_format=conv.data_format,
        )
        new.weight = conv.weight
        if conv.has_bias:
            new.bias = conv.bias
        _replace_child(parent, key, new)
        n += 1
    return n


def _fix_network(arch: str, net: Any) -> None:
    from mindspore import nn

    cells = _cells()
    pool_cls = cells["PaddedMaxPool2d"]
    if arch == "seresnext50_32x4d":
        # Reference: nn.MaxPool2d(3, stride=2, ceil_mode=True). For a 3x3/2
        # window, one extra -FLT_MAX row/column at the bottom/right gives
        # ceil((H-3)/2)+1 outputs for every H, and the extra row is never a
        # window's only content.
        net.pool0 = pool_cls(3, 2, (0, 1, 0, 1))
    elif arch == "xception":
        # Reference: nn.MaxPool2d(3, stride, padding=1) at the end of each
        # strided block.
        n = 0
        for block in net.blocks:
            last = len(block.rep) - 1
            pool = block.rep[last]
            if isinstance(pool, nn.MaxPool2d):
                block.rep[last] = pool_cls(3, 2, (1, 1, 1, 1))
                n += 1
        if n != 4:
            raise RuntimeError(f"expected 4 strided max pools in mindcv's xception, found {n}")
    elif arch == "efficientnet_b0":
        from mindcv.models.efficientnet import MBConv

        n_blocks = 0
        for _, cell in net.cells_and_names():
            if type(cell) is MBConv:
                cell.__class__ = cells["OutOfPlaceMBConv"]
                n_blocks += 1
        n_convs = _symmetric_stride2_convs(net)
        if n_blocks != 16 or n_convs != 5:
            raise RuntimeError(
                f"expected 16 MBConv blocks and 5 stride-2 convolutions in mindcv's efficientnet_b0, "
                f"found {n_blocks} and {n_convs}"
            )


# --------------------------------------------------------------------------
# public API


def reinit_well_scaled(net, seed: int) -> None:
    """Variance-preserving random weights and non-trivial BatchNorm statistics.

    mindcv's own random initialisation makes the logits vanish (EfficientNet-B0
    around 1e-14, Xception 1e-5), which would make every parity check compare
    rounding noise. He-normal convolutions, unit-scale dense layers and
    BatchNorm statistics away from identity give logits of realistic scale.
    """
    import mindspore as ms
    import numpy as np
    from mindspore import nn

    rng = np.random.default_rng(seed)

    def put(param, value):
        param.set_data(ms.Tensor(np.asarray(value, dtype=np.float32)))

    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.Conv2d):
            _, fan_in, kh, kw = cell.weight.shape
            put(cell.weight, rng.normal(0, np.sqrt(2.0 / (fan_in * kh * kw)), cell.weight.shape))
            if cell.bias is not None:
                put(cell.bias, rng.normal(0, 0.1, cell.bias.shape))
        elif isinstance(cell, nn.Dense):
            put(cell.weight, rng.normal(0, np.sqrt(1.0 / cell.weight.shape[1]), cell.weight.shape))
            put(cell.bias, rng.normal(0, 0.1, cell.bias.shape))
        elif isinstance(cell, nn.BatchNorm2d):
            n = cell.gamma.shape[0]
            put(cell.gamma, rng.uniform(0.5, 1.5, n))
            put(cell.beta, rng.normal(0, 0.1, n))
            put(cell.moving_mean, rng.normal(0, 0.1, n))
            put(cell.moving_variance, rng.uniform(0.5, 2.0, n))



def build_network(arch: str, num_classes: int = 1000, seed: int = 0):
    """mindcv's ``arch`` with random weights from ``seed``, fixed, in eval mode.

    Sets MindSpore's global seed (``mindspore.set_seed(seed)``) as a side effect.
    """
    if arch not in ARCHS:
        raise UserError(
            f"unknown architecture {arch!r}",
            fix=f"use one of: {', '.join(ARCHS)}",
        )
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
    _ensure_context()
    import mindspore as ms
    from mindcv.models import create_model

    ms.set_seed(int(seed))
    net = create_model(arch, pretrained=False, num_classes=num_classes)
    names_before = [p.name for p in net.get_parameters()]
    _fix_network(arch, net)
    names_after = [p.name for p in net.get_parameters()]
    if names_before != names_after:  # a fix must never rename or drop a parameter
        raise RuntimeError(f"internal error: fixing {arch} changed its parameter names")
    net.set_train(False)
    net._harness_arch = arch
    return net


def count_trainable_params(net) -> int:
    """Number of trainable parameters (BatchNorm moving statistics excluded)."""
    return int(sum(int(p.size) for p in net.trainable_params()))


def predict(net, x):
    """Logits of ``net`` for ``x`` (float32 NCHW numpy array), as numpy.

    ``net`` may also be a torch module (a ``kind: pytorch`` source's reference).
    """
    import sys

    import numpy as np

    torch = sys.modules.get("torch")
    if torch is not None and isinstance(net, torch.nn.Module):
        from harness import torch_source

        return torch_source.predict(net, x)
    import mindspore as ms

    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise UserError(f"predict expects an NCHW array, got shape {x.shape}")
    _ensure_context()
    net.set_train(False)
    return net(ms.Tensor(x)).asnumpy()


def _arch_of(net) -> str:
    return getattr(net, "_harness_arch", None) or type(net).__name__


def _key_list(keys: list[str], limit: int = 10) -> str:
    shown = ", ".join(keys[:limit])
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"{len(keys)}: {shown}{more}"


def load_checkpoint(net, path) -> None:
    """Load weights into ``net``: a MindSpore ``.ckpt`` with mindcv names, or a
    PyTorch ``.pth`` with timm/Cadene names (renamed by :mod:`harness.checkpoints`).

    Every key must match by name and shape. Optimizer and step bookkeeping
    stored by training (``moments.*``, ``global_step``, ``learning_rate`` ...)
    is ignored; anything else the network lacks, anything it has that the
    file lacks, and any shape mismatch raises :class:`UserError` naming the
    file and the keys.
    """
    import mindspore as ms

    from harness import checkpoints

    path = pathlib.Path(path)
    arch = _arch_of(net)
    if not path.exists():
        raise UserError(
            f"checkpoint file not found (for {arch})", path=path,
            fix="check the path; train or convert a checkpoint first",
        )
    if not path.is_file():
        raise UserError(f"checkpoint path is not a file (for {arch})", path=path,
                        fix="give the path of a MindSpore .ckpt or PyTorch .pth file")
    wanted = checkpoints.read_for(net, path, ignore=_TRAINING_STATE_PREFIXES)
    wanted = {k: ms.Parameter(ms.Tensor(v), name=k) for k, v in wanted.items()}
    not_loaded = ms.load_param_into_net(net, wanted, strict_load=True)
    not_loaded = not_loaded[0] if isinstance(not_loaded, tuple) else not_loaded
    if not_loaded:
        raise UserError(f"parameters not loaded: {_key_list(list(not_loaded))}", path=path,
                        fix=f"use a checkpoint of {arch}")
    net.set_train(False)


def export(net, input_shape: tuple[int, ...], fmt: str, out_path) -> pathlib.Path:
    """Export ``net`` at the fixed ``input_shape`` (NCHW) as ONNX or MINDIR.

    ``out_path`` may carry the suffix (``.onnx`` / ``.mindir``) or not;
    MindSpore adds it. Returns the path written, mode 0644. The file is
    written in a scratch folder beside it and moved into place, so a failed
    export leaves no partial file, and MindSpore's chmod of the folder it
    writes into never touches the caller's folder.
    """
    import numpy as np
    import mindspore as ms

    fmt_u = str(fmt).upper()
    if fmt_u not in _FORMATS:
        raise UserError(f"unknown export format {fmt!r}", fix=f"use one of: {', '.join(_FORMATS)}")
    shape = tuple(input_shape)
    if len(shape) != 4 or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
        raise UserError(
            f"export needs a fixed NCHW input shape of positive integers, got {input_shape!r}",
            fix="give e.g. (1, 3, 224, 224); ONNX export from MindSpore has no dynamic batch",
        )
    suffix = _FORMATS[fmt_u]
    out = pathlib.Path(out_path).expanduser().absolute()
    if out.suffix.lower() == suffix:
        out = out.with_suffix("")
    final = out.parent / (out.name + suffix)
    arch = _arch_of(net)
    _ensure_context()
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        scratch = pathlib.Path(tempfile.mkdtemp(prefix=".export-", dir=final.parent))
    except OSError as exc:
        raise UserError(f"cannot write {fmt_u} export of {arch}: {exc}", path=final,
                        fix="choose a writable output folder") from None
    try:
        net.set_train(False)
        view = _cells()["ExportView"](net)
        view.set_train(False)
        dummy = ms.Tensor(np.zeros(shape, dtype=np.float32))
        try:
            if fmt_u == "ONNX":
                # Named as in the Ascend ACL pipeline (input "image", output "class"),
                # so atc's --input_shape="image:..." works on either export. The
                # batch stays fixed: MindSpore bakes it into Reshape constants
                # (SE-ResNeXt's SE block), so dynamic_axes would export a broken graph.
                ms.onnx.export(view, dummy, file_name=str(scratch / out.name), input_names=["image"],
                               output_names=["class"])
            else:
                ms.export(view, dummy, file_name=str(scratch / out.name), file_format=fmt_u)
        except Exception as exc:
            raise UserError(
                f"{fmt_u} export of {arch} at input {shape} failed: {_cause(exc)}", path=final,
                fix="check the input shape and that every operator of the network is exportable "
                    "(see 'Known traps' in DESIGN.md)",
            ) from None
        written = scratch / (out.name + suffix)
        if not written.is_file():
            raise UserError(f"{fmt_u} export of {arch} wrote no file", path=final,
                            fix="report this: mindspore.export returned without writing its output")
        os.chmod(written, 0o644)
        if final.exists():
            os.chmod(final, 0o644)
        os.replace(written, final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final
