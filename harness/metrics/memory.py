"""A memory guard: refuse a case whose batch cannot fit, before anything is allocated.

The estimate is a lower bound, so the guard never refuses a case that would
fit: the input batch (float32, built once), the output logits, and, when the
model's graph is known (a user's ONNX file), the largest intermediate tensor
per sample times the batch, which the runtime must hold at some point. The
framework's own workspace, weights and arena come on top of that, so a case
that passes the guard can still run out of memory; one that fails it cannot
fit.

The memory available is the host's (``MemAvailable`` in /proc/meminfo, or
``sysconf`` elsewhere), lowered by a cgroup v2 limit when one applies. It is
held against host-side buffers only for accelerator targets (their device
memory is not read here) and against everything for CPU targets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError

FLOAT32 = 4


@dataclass
class Estimate:
    batch_size: int
    input_bytes: int
    output_bytes: int
    activation_bytes: int | None  # None: the model's graph is not known here

    @property
    def total(self) -> int:
        return self.input_bytes + self.output_bytes + (self.activation_bytes or 0)

    def describe(self) -> str:
        parts = [f"input {human(self.input_bytes)}", f"output {human(self.output_bytes)}"]
        if self.activation_bytes is not None:
            parts.append(f"largest intermediate tensor {human(self.activation_bytes)}")
        return f"at least {human(self.total)} ({' + '.join(parts)})"


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def estimate(batch_size: int, sample_shape: tuple[int, ...], num_classes: int, *,
             per_sample_activations: int | None = None) -> Estimate:
    per_input = FLOAT32
    for d in sample_shape:
        per_input *= int(d)
    act = per_sample_activations * batch_size if per_sample_activations else None
    return Estimate(batch_size, per_input * batch_size, FLOAT32 * num_classes * batch_size, act)


def _cgroup_room() -> int | None:
    base = Path("/sys/fs/cgroup")
    try:
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((base / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None


def available_bytes() -> int | None:
    """Memory this process can still get, or None when it cannot be read."""
    found = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if found is None:
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    room = _cgroup_room()
    return min(found, room) if room is not None else found


def largest_fitting(est: Estimate, avail: int, *, host_only: bool = False) -> int:
    """The largest batch whose estimate fits in ``avail`` (every part grows with the batch); 0: none."""
    need = est.input_bytes + est.output_bytes if host_only else est.total
    per_sample = need / max(est.batch_size, 1)
    return int(avail // per_sample) if per_sample > 0 else est.batch_size


def check_fits(est: Estimate, *, where: str, host_only: bool = False, available: int | None = None,
               what: str = "batch") -> None:
    """Raise a UserError with the estimate, and the largest batch that fits,
    when it cannot fit in ``available`` (default: what :func:`available_bytes`
    reads). ``host_only``: the target keeps activations on an accelerator (or,
    for an export, none are held), so only input and output count here."""
    avail = available_bytes() if available is None else available
    if avail is None:
        return
    need = est.input_bytes + est.output_bytes if host_only else est.total
    if need > avail:
        largest = largest_fitting(est, avail, host_only=host_only)
        fits = f"the largest batch that fits is {largest}" if largest else "not even batch 1 fits"
        raise UserError(f"{what} {est.batch_size} cannot fit in memory: it needs {est.describe()}, and this host "
                        f"has {human(avail)} available; {fits}", path=where,
                        fix=f"use smaller batch_sizes (up to {largest}) for this target, or run it on a host with "
                            "more memory"
                        if largest else "run it on a host with more memory")
