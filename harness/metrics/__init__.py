"""Measurements computed from model outputs: Top-k accuracy and export parity (timing, the
memory guard and the interference probe live in their own modules)."""

from harness.metrics.accuracy import TopK
from harness.metrics.parity import Parity, compare_outputs

__all__ = ["TopK", "Parity", "compare_outputs"]
