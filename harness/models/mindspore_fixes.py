"""MindSpore cell surgery used by the model cards' construction fixes.

Padded max pools are written as an explicit ``mint.nn.functional.pad`` with
``-FLT_MAX`` followed by a VALID pool: the ONNX exporter cannot export
MindSpore's padded / ceil-mode max pool or ``ops.pad``, but exports this as
ONNX ``Pad`` + ``MaxPool``. MindSpore's ``pad_mode="same"`` pads unevenly on
even inputs (TF style); :func:`symmetric_stride2_convs` makes strided
convolutions pad symmetrically as the PyTorch references do.

MindSpore and mindcv are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import functools
import re
from typing import Any

FLT_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max




@functools.lru_cache(maxsize=None)
def cells() -> dict[str, type]:
    from mindcv.models.efficientnet import MBConv
    from mindspore import mint, nn

    class PaddedMaxPool2d(nn.Cell):
        """Max pool over an explicit ``-FLT_MAX`` pad (exports as ONNX Pad + MaxPool).

        ``pads`` is (left, right, top, bottom), as ``mint.nn.functional.pad``
        takes it for the last two dimensions.
        """

        def __init__(self, kernel_size: int, stride: int, pads: tuple[int, int, int, int]):
            super().__init__()
            self.pads = tuple(int(p) for p in pads)
            self.fill = -FLT_MAX
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


def replace_child(parent: Any, key: str, new: Any) -> None:
    from mindspore import nn

    if isinstance(parent, nn.SequentialCell) and key.isdigit():
        parent[int(key)] = new
    else:
        setattr(parent, key, new)


def walk(net: Any):
    """(parent, child name, child) for every sub-cell, depth first; a snapshot."""
    out = []
    for _, cell in net.cells_and_names():
        for key, child in cell.name_cells().items():
            out.append((cell, key, child))
    return out


def symmetric_stride2_convs(net: Any) -> int:
    """Stride>1 ``pad_mode="same"`` convolutions -> explicit symmetric k//2 padding."""
    from mindspore import nn

    n = 0
    for parent, key, conv in walk(net):
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
        replace_child(parent, key, new)
        n += 1
    return n


def ms_cause(exc: BaseException, limit: int = 400) -> str:
    """One line from a MindSpore exception: its first paragraph, plus the dump it names."""
    text = str(exc)
    head = re.split(r"\n\s*\n|-{10,}", text, maxsplit=1)[0]
    cause = " ".join(head.split())[:limit] or type(exc).__name__
    dump = re.search(r"See file '([^']+)'", text)
    if dump:
        cause += f" (details: {dump.group(1)})"
    return cause


@contextlib.contextmanager
def out_of_place_augassign():
    """While exporting, compile ``tensor += tensor`` as an ordinary add.

    MindSpore compiles an augmented assignment between tensors to
    ``InplaceAddExt``, which its ONNX converter cannot export ("Can not find
    key InplaceAddExt in convert map"); mindcv's residual blocks (ResNet's
    BasicBlock, EfficientNet's MBConv, ...) all use it. The value is the same,
    so for the export's compile the Tensor/Tensor case is registered as
    ``F.add``, and the original is registered back afterwards.
    """
    from mindspore.ops import functional as F
    from mindspore.ops.composite.multitype_ops import add_impl

    original = add_impl._tensor_add_tensor_augassign

    def add(x, y):
        return F.add(x, y)

    add_impl.augassign_add.register("Tensor", "Tensor")(add)
    try:
        yield
    finally:
        add_impl.augassign_add.register("Tensor", "Tensor")(original)
