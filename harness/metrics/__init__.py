"""Measurements computed from model outputs: Top-k accuracy and export parity."""

from harness.metrics.accuracy import TopK
from harness.metrics.parity import Parity, compare_outputs

__all__ = ["TopK", "Parity", "compare_outputs"]
