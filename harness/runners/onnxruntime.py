"""ONNX Runtime on CPU, and on GPU (CUDA, TensorRT) or Ascend (CANN) through
their execution providers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.errors import UserError
from harness.runners.base import Runner

# Preferred providers per device family, best first. A target may name its
# own list in options.providers.
PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "gpu": ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
    "ascend310": ["CANNExecutionProvider"],
    "ascend310p": ["CANNExecutionProvider"],
    "ascend910": ["CANNExecutionProvider"],
}
PROVIDER_PACKAGE = {
    "CUDAExecutionProvider": "onnxruntime-gpu",
    "TensorrtExecutionProvider": "onnxruntime-gpu",
    "CANNExecutionProvider": "onnxruntime-cann",
}


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"
    formats = ("onnx",)

    def load(self, artifact, input_shape):
        import onnxruntime as ort

        wanted = self.options.get("providers") or PROVIDERS[self.device]
        available = ort.get_available_providers()
        chosen = [p for p in wanted if p in available]
        if not chosen:
            pkgs = sorted({PROVIDER_PACKAGE.get(p, "onnxruntime") for p in wanted})
            raise UserError(
                f"ONNX Runtime has none of {wanted} for device {self.device!r} (available: {available})",
                fix=f"install {' or '.join(pkgs)} on this host")
        opts = ort.SessionOptions()
        if "intra_op_num_threads" in self.options:
            opts.intra_op_num_threads = int(self.options["intra_op_num_threads"])
        provider_options = [
            {"device_id": str(self.device_id)} if p != "CPUExecutionProvider" else {} for p in chosen
        ]
        try:
            self.session = ort.InferenceSession(str(artifact), opts, providers=chosen,
                                                provider_options=provider_options)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise UserError(f"ONNX Runtime could not load the model: {exc}", path=artifact,
                            fix="re-export the model (delete the cached artifact) or check the file") from None
        self.providers = self.session.get_providers()
        self.input_name = self.session.get_inputs()[0].name
        declared = self.session.get_inputs()[0].shape
        if isinstance(declared[0], int) and declared[0] != input_shape[0]:
            raise UserError(f"model input batch is {declared[0]}, asked to run batch {input_shape[0]}",
                            path=artifact, fix="export the model for this batch size or with a dynamic batch")

    def run(self, batch):
        return self.session.run(None, {self.input_name: batch})[0]

    def version(self):
        import onnxruntime as ort

        return ort.__version__
