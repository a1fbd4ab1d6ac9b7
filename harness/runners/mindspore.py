"""MindSpore on CPU, GPU or Ascend 910: the framework network itself
("native") or an exported MINDIR loaded into a GraphCell."""

from __future__ import annotations

from pathlib import Path

from harness.errors import UserError
from harness.runners.base import Runner

DEVICE_TARGET = {"cpu": "CPU", "gpu": "GPU", "ascend910": "Ascend", "ascend310": "Ascend", "ascend310p": "Ascend"}


class MindSporeRunner(Runner):
    name = "mindspore"
    formats = ("native", "mindir")

    def load(self, artifact, input_shape):
        import mindspore as ms
        from mindspore import nn

        from harness.networks import set_context

        set_context(DEVICE_TARGET[self.device])
        if self.device != "cpu":
            ms.set_context(device_id=self.device_id)
        if isinstance(artifact, (str, Path)):
            try:
                self.net = nn.GraphCell(ms.load(str(artifact)))
            except Exception as exc:  # MindSpore raises RuntimeError/ValueError variously
                raise UserError(f"MindSpore could not load the MINDIR: {exc}", path=artifact,
                                fix="re-export it (delete the cached artifact)") from None
        else:
            self.net = artifact
        self._tensor = ms.Tensor

    def run(self, batch):
        # asnumpy() copies the result to the host, which waits for the device.
        return self.net(self._tensor(batch)).asnumpy()

    def version(self):
        import mindspore as ms

        return ms.__version__
