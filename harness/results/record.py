"""Result records: plain data with an identity. Failures are records too."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

STATUSES = ("passed", "failed", "skipped", "error")

# The first release's identity (stored as identity_key, used to find duplicates
# when stores are merged). What the gate follows is the benchmark key, apart
# from the version under test and the machine: harness.results.identity.
IDENTITY_FIELDS = ("model", "stage", "artifact_sha256", "preprocessing", "runner", "runner_version", "device",
                   "batch_size", "precision", "timing_scope")


@dataclass
class Result:
    model: str
    case: str
    stage: str
    status: str
    device: str
    reason: str = ""
    target: str | None = None
    runner: str | None = None
    runner_version: str | None = None
    batch_size: int | None = None
    precision: str | None = None
    timing_scope: str | None = None
    artifact_sha256: str | None = None
    artifact_format: str | None = None
    preprocessing: str | None = None
    # input side in pixels and the suite file's sha256 (recorded since the
    # benchmark key / version split; None in results stored before it)
    input_size: int | None = None
    suite_sha256: str | None = None
    # throughput: the harness's own loop ("harness") or an MLPerf LoadGen
    # scenario; None in results stored before scenarios (the harness's loop)
    scenario: str | None = None
    metrics: dict = field(default_factory=dict)
    # The documented figure this result was held against, with its source and verdict.
    baseline: dict | None = None
    run_id: str | None = None
    # which device of its family the case ran on (the runtime's index: npu-smi
    # row, nvidia-smi number); None on the CPU and in stores written before
    device_index: int | None = None
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")

    def identity(self) -> dict:
        return {k: getattr(self, k) for k in IDENTITY_FIELDS}

    @property
    def identity_key(self) -> str:
        values = tuple(getattr(self, k) for k in IDENTITY_FIELDS)
        try:
            return _identity_key(values)  # a year of history asks ~200,000 times for ~200 keys
        except TypeError:  # an unhashable value
            return _identity_key.__wrapped__(values)

    def to_dict(self) -> dict:
        return asdict(self)


@functools.lru_cache(maxsize=8192)
def _identity_key(values: tuple) -> str:
    blob = json.dumps(dict(zip(IDENTITY_FIELDS, values)), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
