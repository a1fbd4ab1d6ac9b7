"""Results: the record, the store, history, provenance, interchange with other tools."""

from harness.results.record import IDENTITY_FIELDS, STATUSES, Result

__all__ = ["IDENTITY_FIELDS", "STATUSES", "Result"]
