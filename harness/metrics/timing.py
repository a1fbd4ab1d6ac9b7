"""The timing engine.

Warmup runs are timed but kept apart. The measured phase goes on until both
a minimum duration and a minimum iteration count are met (MLPerf LoadGen's
validity rule), or a safety maximum duration is hit, which is recorded. Each
iteration is bracketed by the clock *after* the runner has synchronised, so
asynchronous runtimes are measured to completion.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

# pyperf flags a benchmark as unstable when the standard deviation reaches
# 10% of the mean; so do we.
UNSTABLE_CV = 0.10


@dataclass
class TimingConfig:
    warmup: int = 3
    min_iterations: int = 10
    min_duration_s: float = 1.0
    max_duration_s: float = 120.0

    @classmethod
    def from_spec(cls, spec) -> "TimingConfig":
        return cls(spec.warmup, spec.min_iterations, spec.min_duration_s, spec.max_duration_s)


@dataclass
class Timing:
    batch_size: int
    timing_scope: str
    warmup_iterations: int
    warmup_s: float
    iterations: int
    duration_s: float
    throughput_ips: float
    latency_ms_mean: float
    latency_ms_min: float
    latency_ms_max: float
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_p99: float
    latency_ms_std: float
    cv: float
    unstable: bool
    # True when max_duration_s stopped the run before min_iterations
    truncated: bool
    # Every timed iteration's latency (ms, in timing order). Kept so the
    # history gate can test a change for significance on the samples
    # themselves (Mann-Whitney U: latencies are skewed and heavy-tailed, so a
    # rank test beats a t-test on the mean); results stored before this field
    # existed fall back to a Welch t-test on the summary (mean, std, n).
    latencies_ms: list[float] = field(default_factory=list)

    def as_metrics(self) -> dict:
        return asdict(self)


def summarize(latencies_s, *, batch_size: int, timing_scope: str, warmup_iterations: int = 0,
              warmup_s: float = 0.0, duration_s: float | None = None, truncated: bool = False) -> Timing:
    lat = np.asarray(latencies_s, dtype=np.float64)
    if lat.size == 0:
        raise ValueError("no timed iterations")
    if duration_s is None:
        duration_s = float(lat.sum())
    mean = float(lat.mean())
    std = float(lat.std(ddof=1)) if lat.size > 1 else 0.0
    cv = std / mean if mean > 0 else 0.0
    p50, p90, p99 = np.percentile(lat, [50, 90, 99])
    # Throughput over the summed iteration times: for host scope this is the
    # loop's wall time less the clock reads; for device scope it is
    # 1000 x batch / mean device ms, ais_bench's own definition.
    busy = float(lat.sum())
    return Timing(
        batch_size=batch_size,
        timing_scope=timing_scope,
        warmup_iterations=warmup_iterations,
        warmup_s=warmup_s,
        iterations=int(lat.size),
        duration_s=float(duration_s),
        throughput_ips=batch_size * lat.size / busy if busy > 0 else float("inf"),
        latency_ms_mean=mean * 1e3,
        latency_ms_min=float(lat.min()) * 1e3,
        latency_ms_max=float(lat.max()) * 1e3,
        latency_ms_p50=float(p50) * 1e3,
        latency_ms_p90=float(p90) * 1e3,
        latency_ms_p99=float(p99) * 1e3,
        latency_ms_std=std * 1e3,
        cv=cv,
        unstable=bool(cv >= UNSTABLE_CV),
        truncated=truncated,
        latencies_ms=[round(float(x) * 1e3, 6) for x in lat],
    )


def measure(runner, batch: np.ndarray, config: TimingConfig, *, clock=time.perf_counter) -> Timing:
    """Time `runner.run(batch)` + `runner.synchronize()` under `config`.

    A runner that times itself (trtexec runs its own warm-up and timed loop
    in one process) has `measure_device(batch, config)`, returning each
    inference's device time in ms; those are summarised the same way."""
    own = getattr(runner, "measure_device", None)
    if own is not None:
        got = own(batch, config)
        return summarize([ms / 1e3 for ms in got["device_ms"]], batch_size=int(batch.shape[0]),
                         timing_scope=runner.timing_scope, warmup_iterations=got.get("warmup_iterations", 0),
                         warmup_s=got.get("warmup_s", 0.0), duration_s=got.get("duration_s"))
    run, sync = runner.run, runner.synchronize
    t0 = clock()
    for _ in range(config.warmup):
        run(batch)
        sync()
    warmup_s = clock() - t0

    device_before = runner.device_times_ms()
    n_device_before = len(device_before) if device_before is not None else 0

    latencies = []
    append = latencies.append
    start = clock()
    deadline = start + config.max_duration_s
    truncated = False
    while True:
        a = clock()
        run(batch)
        sync()
        b = clock()
        append(b - a)
        if len(latencies) >= config.min_iterations and b - start >= config.min_duration_s:
            break
        if b >= deadline:
            truncated = len(latencies) < config.min_iterations
            break
    duration = clock() - start

    scope = runner.timing_scope
    if scope == "device":
        device_ms = runner.device_times_ms() or []
        device_ms = device_ms[n_device_before:] if n_device_before else device_ms
        if len(device_ms) != len(latencies):
            raise RuntimeError(f"{runner.name} reported {len(device_ms)} device times for {len(latencies)} runs")
        latencies = [ms / 1e3 for ms in device_ms]
    return summarize(latencies, batch_size=int(batch.shape[0]), timing_scope=scope,
                     warmup_iterations=config.warmup, warmup_s=warmup_s, duration_s=duration,
                     truncated=truncated)
