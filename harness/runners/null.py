"""A runner that does no work: measures the harness's own overhead and lets
the layers above the runners be tested without any framework."""

from __future__ import annotations

import numpy as np

import harness
from harness.runners.base import Runner
from harness.vocab import DEVICE_NAMES, FORMAT_NAMES


class NullRunner(Runner):
    name = "null"
    formats = FORMAT_NAMES
    devices = DEVICE_NAMES  # it runs nothing, so "anywhere"

    def load(self, artifact, input_shape):
        self.num_classes = int(self.options.get("num_classes", 1000))
        # Fixed outputs, allocated once: `run` must cost nothing.
        self._out = np.zeros((input_shape[0], self.num_classes), np.float32)

    def run(self, batch):
        return self._out[: len(batch)]

    def version(self):
        return harness.__version__
