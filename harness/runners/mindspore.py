"""MindSpore on CPU, GPU or Ascend 910: the framework network itself
("native") or an exported MINDIR loaded into a GraphCell.

MindSpore fixes its device target once per process, so a process runs
MindSpore cases of one device family (pytest -m ascend910, -m gpu, -m cpu).
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import UserError
from harness.models.mindspore_net import set_context
from harness.runners import devices as devices
from harness.runners.base import Runner
from harness.vocab import DEVICE_FAMILIES, DEVICES

DEVICE_TARGET = {d.name: d.mindspore_target for d in DEVICE_FAMILIES if d.mindspore_target}
PACKAGE_HINT = {
    "GPU": "install a MindSpore build with the GPU backend and a matching CUDA (see mindspore.cn/install)",
    "Ascend": "install MindSpore for Ascend and source /usr/local/Ascend/ascend-toolkit/set_env.sh",
}


def check_target(device: str, available: list[str] | None = None, *, cann=None) -> str:
    """The MindSpore device target for a harness device family, or a UserError
    saying why this installation cannot run it."""
    if device not in DEVICE_TARGET:
        raise UserError(f"MindSpore has no device target for {device!r}", fix=f"use one of {', '.join(DEVICE_TARGET)}")
    target = DEVICE_TARGET[device]
    available = devices.mindspore_targets() if available is None else available
    if not available:
        raise UserError("MindSpore is not installed", fix="pip install -e '.[mindspore]' (mindspore, mindcv)")
    if target not in available:
        raise UserError(f"this MindSpore build has no {target} backend (it has {', '.join(available)})",
                        fix=PACKAGE_HINT[target])
    if target == "Ascend":
        (cann or devices.require_cann)()
    return target


class MindSporeRunner(Runner):
    name = "mindspore"
    formats = ("native", "mindir")
    devices = tuple(DEVICE_TARGET)

    @classmethod
    def unavailable(cls, options: dict | None = None, device: str | None = None) -> str | None:
        """MindSpore (and, for the native network, mindcv) absent, or a build without
        this device's backend: the case skips with the install (never a raw
        ModuleNotFoundError)."""
        import importlib.util

        for mod in ("mindspore", "mindcv"):
            if importlib.util.find_spec(mod) is None:
                return f"{mod} is not installed: pip install -e '.[mindspore]' (mindspore, mindcv)"
        target = DEVICE_TARGET.get(device or "")
        available = devices.mindspore_targets()
        if target and target != "CPU" and target not in available:
            return f"this MindSpore build has no {target} backend (it has {', '.join(available)}): " \
                   f"{PACKAGE_HINT[target]}"
        return None

    def load(self, artifact, input_shape):
        import mindspore as ms
        from mindspore import nn


        target = check_target(self.device)
        set_context(target)
        if DEVICES[self.device].detector != "host":
            try:
                ms.set_context(device_id=self.device_id)
            except (RuntimeError, ValueError) as exc:
                raise UserError(f"MindSpore cannot use {target} device {self.device_id}: {exc}",
                                fix="check device_id in the suite against npu-smi info / nvidia-smi") from None
        if isinstance(artifact, (str, Path)):
            try:
                self.net = nn.GraphCell(ms.load(str(artifact)))
            except Exception as exc:  # MindSpore raises RuntimeError/ValueError variously
                raise UserError(f"MindSpore could not load the MINDIR: {exc}", path=artifact,
                                fix=self.repair_hint(artifact)) from None
        else:
            self.net = artifact
        self._tensor = ms.Tensor

    def run(self, batch):
        # asnumpy() copies the result to the host, which waits for the device.
        return self.net(self._tensor(batch)).asnumpy()

    def version(self):
        import mindspore as ms

        return ms.__version__
