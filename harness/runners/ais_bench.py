"""Ascend 310/310P OM inference through ais_bench's Python API.

ais_bench (with its aclruntime backend) is installed from Ascend's tools
repository on a CANN host; it is not on PyPI (the PyPI package
`ais-bench-benchmark` is an unrelated tool). Its timings are the NPU's own
compute times, so this runner's timing scope is "device".
"""

from __future__ import annotations

import importlib.metadata

from harness.errors import UserError
from harness.runners.base import Runner


class AisBenchRunner(Runner):
    name = "ais_bench"
    formats = ("om",)
    timing_scope = "device"

    def load(self, artifact, input_shape):
        try:
            from ais_bench.infer.interface import InferSession
        except ImportError:
            raise UserError(
                "ais_bench is not importable on this host",
                fix="on a CANN host, install ais_bench and aclruntime from Ascend's tools repository "
                    "(source /usr/local/Ascend/ascend-toolkit/set_env.sh first)") from None
        self.session = InferSession(self.device_id, str(artifact))
        declared = list(self.session.get_inputs()[0].shape)
        if declared and declared != list(input_shape):
            raise UserError(f"OM input shape is {declared}, asked to run {list(input_shape)}", path=artifact,
                            fix="convert the ONNX model with atc for this batch size")
        self._runs = 0

    def run(self, batch):
        out = self.session.infer([batch], mode="static")
        self._runs += 1
        return out[0]

    def device_times_ms(self):
        # ais_bench keeps one entry per infer() call since the session began.
        times = list(self.session.sumary().exec_time_list)
        return [float(t) for t in times[-self._runs:]] if self._runs else []

    def version(self):
        for dist in ("ais_bench", "ais-bench"):
            try:
                return importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
        return "unknown"

    def close(self):
        session = getattr(self, "session", None)
        if session is not None:
            session.finalize()
            self.session = None
