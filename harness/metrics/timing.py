"""The timing engine: warm-up to a steady state, then repetitions until the estimate is precise.

The unit of evidence is a repetition (one timed window), not an iteration:
iterations inside one window share the machine's state, so they say nothing
about run-to-run variation. A case runs as k >= 3 repetitions and reports
the median throughput with a 95% interval over them
(:func:`harness.metrics.repetitions.repeat_until_precise`), stopping when the
interval's half-width reaches the target (default +-2%) or its time budget is
spent. Every repetition runs under an interference probe
(:mod:`harness.metrics.interference`): one during which other processes used
more than the threshold share of the machine is marked contended and measured
again, within a bound; a result that stays contended is stored as such.

Warm-up runs until a steady state is detected (MSER-5 over the warm-up
latencies: :func:`~harness.metrics.repetitions.steady_state_start`), at least
``warmup`` iterations and at most ``warmup_max_s`` seconds.

Each iteration is bracketed by the clock *after* the runner has
synchronised, so asynchronous runtimes are measured to completion. For
device-scope runners (ais_bench) the device's own per-run times replace the
host clock.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from harness.config.timing import TimingSpec
from harness.metrics.interference import InterferenceProbe
from harness.metrics.repetitions import Rep, estimate, median_ci, repeat_until_precise, steady_state_start

# A result stores at most this many per-iteration latencies (evenly spaced over
# the timed iterations; every statistic is computed from all of them first), so
# one result adds a bounded ~20 KB to the store however fast the model: the
# gate needs only the per-repetition values, the pytest-benchmark export a sample.
MAX_STORED_LATENCIES = 1000

# pyperf flags a benchmark as unstable when the standard deviation reaches
# 10% of the mean; so do we (per iteration, within the kept repetitions).
UNSTABLE_CV = 0.10


_SPEC = TimingSpec()  # the suite's `timing:` section holds the defaults (and says what each field does)


@dataclass
class TimingConfig:
    """A TimingSpec as the engine takes it: the same fields and defaults (config/timing.py), no validation.
    Each repetition times min_iterations // repetitions iterations (at least 1) and min_duration_s /
    repetitions seconds (at least min_repetition_s), so a case costs about what one window did; no
    repetition beyond the minimum once the measurement would pass budget_s."""

    warmup: int = _SPEC.warmup
    min_iterations: int = _SPEC.min_iterations
    min_duration_s: float = _SPEC.min_duration_s
    max_duration_s: float = _SPEC.max_duration_s
    repetitions: int = _SPEC.repetitions
    max_repetitions: int = _SPEC.max_repetitions
    target_rel_halfwidth: float = _SPEC.target_rel_halfwidth
    budget_s: float = _SPEC.budget_s
    warmup_max_s: float = _SPEC.warmup_max_s
    contention_threshold: float = _SPEC.contention_threshold
    max_redo: int = _SPEC.max_redo
    min_repetition_s: float = _SPEC.min_repetition_s

    @classmethod
    def from_spec(cls, spec) -> "TimingConfig":
        return cls(**{k: getattr(spec, k) for k in cls.__dataclass_fields__ if hasattr(spec, k)})

    def per_repetition(self) -> tuple[int, float]:
        k = max(1, self.repetitions)
        return max(1, self.min_iterations // k), max(self.min_duration_s / k, self.min_repetition_s)


@dataclass
class Timing:
    batch_size: int
    timing_scope: str
    warmup_iterations: int
    warmup_s: float
    warmup_steady: bool  # False: warm-up hit warmup_max_s before a steady state was detected
    iterations: int  # timed iterations in the kept repetitions
    duration_s: float
    throughput_ips: float  # median over repetitions
    throughput_ci_lo: float
    throughput_ci_hi: float
    throughput_rel_halfwidth: float  # precision achieved (95% interval half-width / median)
    ci_method: str
    repetitions: list[dict]  # one per repetition: throughput, iterations, interference, kept
    contended: bool  # the result stayed contended: never a reference, never a regression
    n_contended: int
    stopped_by: str  # precision | budget | max_reps | deadline
    precise: bool  # the precision target was met
    latency_ms_mean: float
    latency_ms_min: float
    latency_ms_max: float
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_p99: float
    latency_ms_std: float
    latency_ms_p50_ci_lo: float
    latency_ms_p50_ci_hi: float
    cv: float
    unstable: bool
    # True when max_duration_s stopped the case before its minimum repetitions
    truncated: bool
    # The timed iterations' latencies (ms, in timing order) of the kept
    # repetitions: all of them up to MAX_STORED_LATENCIES, else an evenly spaced sample.
    latencies_ms: list[float] = field(default_factory=list)
    latencies_stored: str = "all"  # "all", or "every k-th of N" for a sample
    # A device-scope runner that runs from the host (torch on a GPU): the same
    # repetitions timed by the host clock around each run (copies in and out
    # included), labelled {"timing_scope": "host", throughput median and 95% interval, p50}
    host_scope: dict | None = None

    def as_metrics(self) -> dict:
        return asdict(self)

    @property
    def halfwidth(self) -> float:
        return (self.throughput_ci_hi - self.throughput_ci_lo) / 2


def _percentiles(lat_ms: np.ndarray) -> dict:
    p50, p90, p99 = np.percentile(lat_ms, [50, 90, 99])
    mean = float(lat_ms.mean())
    std = float(lat_ms.std(ddof=1)) if lat_ms.size > 1 else 0.0
    return {"latency_ms_mean": mean, "latency_ms_min": float(lat_ms.min()), "latency_ms_max": float(lat_ms.max()),
            "latency_ms_p50": float(p50), "latency_ms_p90": float(p90), "latency_ms_p99": float(p99),
            "latency_ms_std": std, "cv": std / mean if mean > 0 else 0.0}


def _steady(lat: list[float], tolerance: float = 0.10) -> bool:
    """MSER-5 puts the end of the transient in the first half, and the rest is level:
    its two halves' medians within ``tolerance`` (MSER searches the first half
    only, so a transient longer than that would otherwise pass unseen)."""
    if len(lat) < 4:
        return False
    d = steady_state_start(lat)
    if d >= len(lat) // 2:
        return False
    tail = lat[d:]
    a, b = np.median(tail[: len(tail) // 2]), np.median(tail[len(tail) // 2:])
    return bool(abs(b / a - 1) <= tolerance) if a > 0 else False


def _warm_up(run_once, config: TimingConfig, clock) -> tuple[int, float, bool]:
    """At least ``warmup`` iterations, then one at a time until MSER-5 finds the
    run steady (:func:`_steady`) or ``warmup_max_s`` has passed: a slow network
    overshoots the cap by one iteration at most."""
    if config.warmup == 0:  # asked for none: no steady state can be claimed either
        return 0, 0.0, False
    lat: list[float] = []
    t0 = clock()
    while True:
        lat.append(run_once())
        elapsed = clock() - t0
        if len(lat) < config.warmup:
            continue
        # ten samples at least: fewer cannot tell a new level from noise
        steady = len(lat) >= max(config.warmup, 10) and _steady(lat)
        if steady or elapsed >= config.warmup_max_s:
            return len(lat), elapsed, steady


def _repeat(window, config: TimingConfig, probe_factory, clock):
    return repeat_until_precise(window, min_reps=config.repetitions, max_reps=config.max_repetitions,
                                target_rel_halfwidth=config.target_rel_halfwidth,
                                time_budget_s=min(config.budget_s, config.max_duration_s),
                                contention_threshold=config.contention_threshold, max_redo=config.max_redo,
                                deadline_s=config.max_duration_s, probe_factory=probe_factory, clock=clock)


def _measure_device(own, batch: np.ndarray, config: TimingConfig, scope: str, clock, probe_factory) -> Timing:
    """A runner that times itself (trtexec runs its own warm-up and timed loop in
    one process) has `measure_device(batch, config)`, returning each inference's
    device time in ms: one call per repetition, each a separate process."""
    bs = int(batch.shape[0])
    per_iter, per_s = config.per_repetition()
    rep_cfg = replace(config, min_iterations=per_iter, min_duration_s=per_s)
    warm: dict = {}

    def window():
        got = own(batch, rep_cfg)
        lat = [ms / 1e3 for ms in got["device_ms"]]
        warm.setdefault("first", lat)
        warm["n"] = warm.get("n", 0) + got.get("warmup_iterations", 0)
        warm["s"] = warm.get("s", 0.0) + got.get("warmup_s", 0.0)
        return bs * len(lat) / float(sum(lat)), {"latencies_s": lat}

    start = clock()
    rr = _repeat(window, config, probe_factory, clock)
    return _timing(rr, batch_size=bs, timing_scope=scope,
                   warmup=(warm.get("n", 0), warm.get("s", 0.0), _steady(warm.get("first", []))),
                   duration_s=clock() - start, config=config)


def measure(runner, batch: np.ndarray, config: TimingConfig, *, clock=time.perf_counter,
            probe_factory=InterferenceProbe, outputs: dict | None = None) -> Timing:
    """Time `runner.run(batch)` + `runner.synchronize()` under `config`.

    ``outputs``, if given, receives the outputs of the first and the last timed
    iteration ("first", "last"), kept outside the clock's brackets, for the
    caller to check (non-finite values): the statistics do not change."""
    own = getattr(runner, "measure_device", None)
    if own is not None:
        return _measure_device(own, batch, config, runner.timing_scope, clock, probe_factory)
    run, sync = runner.run, runner.synchronize
    bs = int(batch.shape[0])
    kept: dict = outputs if outputs is not None else {}
    timed = [False]  # warm-up outputs are not kept

    def run_once() -> float:
        a = clock()
        out = run(batch)
        sync()
        d = clock() - a
        if timed[0]:
            kept.setdefault("first", out)
            kept["last"] = out
        return d

    warm_n, warm_s, steady = _warm_up(run_once, config, clock)
    min_iter, min_s = config.per_repetition()
    scope = runner.timing_scope
    start = clock()
    deadline = start + config.max_duration_s

    def window():
        timed[0] = outputs is not None
        device_before = runner.device_times_ms()
        n_before = len(device_before) if device_before is not None else 0
        lat = []
        w0 = clock()
        while True:
            lat.append(run_once())
            now = clock()
            if (len(lat) >= min_iter and now - w0 >= min_s) or now >= deadline:
                break
        extra = {}
        if scope == "device":
            device_ms = (runner.device_times_ms() or [])[n_before:]
            if len(device_ms) != len(lat):
                raise RuntimeError(f"{runner.name} reported {len(device_ms)} device times for {len(lat)} runs")
            extra["host_latencies_s"] = lat  # the host clock around the same runs, kept beside
            lat = [ms / 1e3 for ms in device_ms]
        busy = float(sum(lat))
        return (bs * len(lat) / busy if busy > 0 else float("inf")), {"latencies_s": lat, **extra}

    rr = _repeat(window, config, probe_factory, clock)
    return _timing(rr, batch_size=bs, timing_scope=scope, warmup=(warm_n, warm_s, steady),
                   duration_s=clock() - start, config=config)


def _timing(rr, *, batch_size: int, timing_scope: str, warmup: tuple, duration_s: float,
            config: TimingConfig) -> Timing:
    kept = rr.used
    used = {id(r) for r in kept}
    lat_ms = np.asarray([x * 1e3 for r in kept for x in r.extra["latencies_s"]], dtype=np.float64)
    p50 = {id(r): float(np.percentile(np.asarray(r.extra["latencies_s"]) * 1e3, 50)) for r in rr.reps}
    p50_ci = median_ci([p50[id(r)] for r in kept])
    reps = [{"throughput_ips": r.value, "iterations": len(r.extra["latencies_s"]), "duration_s": r.duration_s,
             "latency_ms_p50": p50[id(r)],
             "contended": r.contended, "kept": r.kept, "used": id(r) in used,
             "interference": r.interference.as_dict() if r.interference is not None else None}
            for r in rr.reps]
    stats = _percentiles(lat_ms)
    warm_n, warm_s, steady = warmup
    host = None
    if kept and all("host_latencies_s" in r.extra for r in kept):
        per_rep = [batch_size * len(r.extra["host_latencies_s"]) / sum(r.extra["host_latencies_s"]) for r in kept]
        ci = median_ci(per_rep)
        h_ms = np.asarray([x * 1e3 for r in kept for x in r.extra["host_latencies_s"]])
        host = {"timing_scope": "host", "throughput_ips": ci.median, "throughput_ci_lo": ci.lo,
                "throughput_ci_hi": ci.hi, "ci_method": ci.method, "latency_ms_p50": float(np.percentile(h_ms, 50)),
                "latency_ms_p99": float(np.percentile(h_ms, 99))}
    return Timing(
        batch_size=batch_size, timing_scope=timing_scope, warmup_iterations=warm_n, warmup_s=warm_s,
        warmup_steady=steady, iterations=int(lat_ms.size), duration_s=duration_s, throughput_ips=rr.median,
        throughput_ci_lo=rr.ci_lo, throughput_ci_hi=rr.ci_hi, throughput_rel_halfwidth=rr.rel_halfwidth,
        ci_method=rr.ci_method, repetitions=reps, contended=rr.contended, n_contended=rr.n_contended,
        stopped_by=rr.stopped_by, precise=rr.rel_halfwidth <= config.target_rel_halfwidth,
        latency_ms_p50_ci_lo=p50_ci.lo, latency_ms_p50_ci_hi=p50_ci.hi, **stats,
        unstable=bool(stats["cv"] >= UNSTABLE_CV), truncated=len(rr.kept) < config.repetitions,
        latencies_ms=[round(float(x), 6) for x in _sample(lat_ms)],
        latencies_stored="all" if lat_ms.size <= MAX_STORED_LATENCIES
        else f"{MAX_STORED_LATENCIES} evenly spaced of {lat_ms.size}", host_scope=host,
    )


def _sample(lat_ms: np.ndarray) -> np.ndarray:
    if lat_ms.size <= MAX_STORED_LATENCIES:
        return lat_ms
    return lat_ms[np.linspace(0, lat_ms.size - 1, MAX_STORED_LATENCIES).round().astype(int)]


def summarize(repetitions_s: list[list[float]], *, batch_size: int, timing_scope: str,
              contended: list[bool] | None = None, warmup_iterations: int = 0) -> Timing:
    """A Timing from given repetitions (lists of per-iteration seconds): what
    `measure` reports, for results measured elsewhere (imported logs) and tests."""
    if not repetitions_s or not all(len(r) for r in repetitions_s):
        raise ValueError("no timed iterations")
    flags = contended or [False] * len(repetitions_s)
    reps = [Rep(batch_size * len(r) / float(sum(r)), {"latencies_s": list(r)}, None, c, True, float(sum(r)))
            for r, c in zip(repetitions_s, flags)]
    rr = estimate(reps, min_reps=min(3, len(reps)), stopped_by="given", elapsed_s=sum(r.duration_s for r in reps))
    return _timing(rr, batch_size=batch_size, timing_scope=timing_scope, warmup=(warmup_iterations, 0.0, True),
                   duration_s=rr.elapsed_s, config=TimingConfig(repetitions=len(reps)))
