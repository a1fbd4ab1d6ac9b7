"""MindSpore networks: build any mindcv classifier, apply its card's fixes, export it.

``build_network`` takes mindcv's architecture and applies the construction
fixes its model card (:mod:`harness.models.cards`) names, so the three
documented networks compute the same function as their PyTorch references
and export to ONNX. No parameter is added, removed or renamed: the networks
keep mindcv's parameter names (a card's rules map reference names onto them).

MindSpore and mindcv are imported inside the functions, so importing this
module works on a host without them.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

import numpy as np

from harness.errors import UserError
from harness.fsio import move_into_place
from harness.models import weights
from harness.models.cards import card_for
from harness.models.mindspore_fixes import cells, ms_cause, out_of_place_augassign

_FORMATS = {"ONNX": ".onnx", "MINDIR": ".mindir"}
_DEVICES = ("CPU", "GPU", "Ascend")

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
                fix="call harness.models.mindspore_net.set_context() once, before building or running any network",
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
    card = card_for(arch)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
    _ensure_context()
    import mindspore as ms
    from mindcv.models import create_model

    ms.set_seed(int(seed))
    net = create_model(arch, pretrained=False, num_classes=num_classes)
    names_before = [p.name for p in net.get_parameters()]
    if card.fix is not None:
        card.fix(net)
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

    """
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
    PyTorch ``.pth`` with timm/Cadene names (renamed by :mod:`harness.models.weights`).

    Every key must match by name and shape. Optimizer and step bookkeeping
    stored by training (``moments.*``, ``global_step``, ``learning_rate`` ...)
    is ignored; anything else the network lacks, anything it has that the
    file lacks, and any shape mismatch raises :class:`UserError` naming the
    file and the keys.
    """
    import mindspore as ms

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
    wanted = weights.read_for(net, path, ignore=_TRAINING_STATE_PREFIXES)
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
        view = cells()["ExportView"](net)
        view.set_train(False)
        dummy = ms.Tensor(np.zeros(shape, dtype=np.float32))
        try:
            with out_of_place_augassign():
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
                f"{fmt_u} export of {arch} at input {shape} failed: {ms_cause(exc)}", path=final,
                fix="check the input shape and that every operator of the network is exportable "
                    "(see 'Known traps' in DESIGN.md)",
            ) from None
        written = scratch / (out.name + suffix)
        if not written.is_file():
            raise UserError(f"{fmt_u} export of {arch} wrote no file", path=final,
                            fix="report this: mindspore.export returned without writing its output")
        if final.exists():
            os.chmod(final, 0o644)
        move_into_place(written, final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final
