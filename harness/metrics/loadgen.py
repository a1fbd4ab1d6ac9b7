"""The throughput stage under MLPerf LoadGen (``mlcommons-loadgen``): Offline, SingleStream, Server.

LoadGen decides when queries arrive and how many samples each holds; the
runner answers them. One sample is one image: a query's samples are run in
chunks of the case's batch size (the last chunk padded, as a static-batch
export needs). The inputs are the case's preprocessed batch; LoadGen's sample
indices choose nothing, since these generated images do not change the
compute.

- **Offline**: one query with every sample; the figure is LoadGen's samples
  per second.
- **SingleStream**: one sample per query, the next issued when the last
  completes; the figure is the 90th percentile latency (and 1 / mean latency
  as a rate). A batch size above 1 runs the whole batch for each query.
- **Server**: Poisson arrivals at a target QPS; a query meets the bound when
  its latency's 99th percentile stays under ``server_latency_ms``. The stage
  tries target rates from the Offline rate downward and reports the highest
  that LoadGen calls VALID (``tried`` lists them all).

LoadGen's own summary fields (validity, the early-stopping verdict, QPS,
latency percentiles, what it was asked and what it used) are stored with the
result under ``metrics.loadgen``; its log files go to a temporary folder.
"""

from __future__ import annotations

import json
import queue
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SCENARIO_NAMES = {"offline": "Offline", "singlestream": "SingleStream", "server": "Server"}
# the Server search: target rates as fractions of the Offline rate, highest first
SERVER_FRACTIONS = (0.9, 0.75, 0.6, 0.45, 0.3, 0.2, 0.1)
OFFLINE_HEADROOM = 1.5
KEEP = ("result_validity", "result_invalid_reason", "early_stopping_met", "early_stopping_result",
        "result_samples_per_second", "result_scheduled_samples_per_sec", "result_completed_samples_per_sec",
        "result_query_count", "result_min_duration_met", "result_min_queries_met", "result_mean_latency_ns",
        "result_min_latency_ns", "result_max_latency_ns", "result_50.00_percentile_latency_ns",
        "result_90.00_percentile_latency_ns", "result_95.00_percentile_latency_ns",
        "result_97.00_percentile_latency_ns", "result_99.00_percentile_latency_ns",
        "result_99.90_percentile_latency_ns", "effective_scenario", "effective_target_qps",
        "effective_target_latency_ns", "effective_min_duration_ms", "effective_min_query_count",
        "effective_samples_per_query", "loadgen_version", "num_errors")


def available() -> str | None:
    """None when LoadGen imports, else why not (the case skips naming it)."""
    try:
        import mlperf_loadgen  # noqa: F401
    except ImportError:
        return "MLPerf LoadGen is not installed (pip install mlcommons-loadgen)"
    return None


def read_detail_log(path) -> dict:
    """The ``:::MLLOG`` key/value pairs of LoadGen's detail log that a result keeps."""
    out = {}
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(":::MLLOG "):
            try:
                rec = json.loads(line[len(":::MLLOG "):])
            except ValueError:
                continue
            if rec.get("key") in KEEP:
                out[rec["key"]] = rec.get("value")
    return out


class _Sut:
    """Answers LoadGen's queries with the runner, chunk by chunk of the batch size."""

    def __init__(self, runner, batch: np.ndarray, threaded: bool):
        self.runner, self.batch, self.bs = runner, batch, batch.shape[0]
        self.threaded = threaded
        self.q: queue.Queue = queue.Queue()
        self.worker = None
        if threaded:
            self.worker = threading.Thread(target=self._serve, daemon=True)
            self.worker.start()

    def _answer(self, samples) -> None:
        import mlperf_loadgen as lg

        for i in range(0, len(samples), self.bs):
            chunk = samples[i:i + self.bs]
            self.runner.run(self.batch)
            self.runner.synchronize()
            lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, 0, 0) for s in chunk])

    def issue(self, samples) -> None:
        if self.threaded:
            for s in samples:
                self.q.put(s)
        else:
            self._answer(samples)

    def _serve(self) -> None:
        while True:
            s = self.q.get()
            if s is None:
                return
            chunk = [s]
            while len(chunk) < self.bs:  # whatever has arrived joins the batch; no waiting for more
                try:
                    nxt = self.q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self.q.put(None)
                    break
                chunk.append(nxt)
            self._answer(chunk)

    def close(self) -> None:
        if self.worker is not None:
            self.q.put(None)
            self.worker.join(timeout=60)


def run_loadgen(runner, batch: np.ndarray, scenario: str, *, min_duration_s: float, min_queries: int,
                expected_qps: float, server_qps: float | None = None, server_latency_ms: float | None = None,
                samples: int = 1024) -> dict:
    """One LoadGen test in PerformanceOnly mode; returns its summary fields."""
    import mlperf_loadgen as lg

    st = lg.TestSettings()
    st.scenario = getattr(lg.TestScenario, SCENARIO_NAMES[scenario])
    st.mode = lg.TestMode.PerformanceOnly
    st.min_duration_ms = int(1000 * min_duration_s)
    st.min_query_count = max(1, int(min_queries))
    if scenario == "offline":
        # LoadGen sizes its one query from this rate: headroom, so that a host
        # faster than the warm-up estimate still meets the minimum duration
        st.offline_expected_qps = offline_qps_setting(OFFLINE_HEADROOM * expected_qps, min_duration_s, batch.shape[0])
    elif scenario == "singlestream":
        st.single_stream_expected_latency_ns = int(1e9 / max(expected_qps, 1e-3))
    else:
        st.server_target_qps = max(0.1, server_qps or expected_qps)
        st.server_target_latency_ns = int(1e6 * server_latency_ms)
    sut_impl = _Sut(runner, batch, threaded=scenario == "server")
    with tempfile.TemporaryDirectory(prefix="harness-loadgen-") as out:
        ls = lg.LogSettings()
        ls.log_output.outdir = out
        ls.log_output.copy_summary_to_stdout = False
        ls.enable_trace = False
        sut = lg.ConstructSUT(sut_impl.issue, lambda: None)
        qsl = lg.ConstructQSL(samples, samples, lambda s: None, lambda s: None)
        try:
            lg.StartTestWithLogSettings(sut, qsl, st, ls)
        finally:
            sut_impl.close()
            lg.DestroyQSL(qsl)
            lg.DestroySUT(sut)
        return read_detail_log(Path(out) / "mlperf_log_detail.txt")


def offline_qps_setting(qps: float, min_duration_s: float, batch_size: int) -> float:
    """The expected rate to give LoadGen so that its one Offline query holds a whole number of batches.

    LoadGen sizes that query as expected QPS x minimum duration x 1.1; a
    query of 115 samples at batch 8 would end in a batch padded with 5 idle
    rows, about 4% of the work done for nothing."""
    per_s = 1.1 * max(min_duration_s, 1e-3)
    samples = max(batch_size, -(-int(max(1.0, qps) * per_s) // batch_size) * batch_size)
    return (samples + 0.5) / per_s


def _ms(ns) -> float | None:
    return ns / 1e6 if isinstance(ns, (int, float)) else None


def metrics_of(summary: dict, scenario: str) -> dict:
    """The result's headline figures from LoadGen's summary."""
    if scenario == "singlestream":
        mean = summary.get("result_mean_latency_ns")
        ips = 1e9 / mean if mean else None
    elif scenario == "server":
        ips = summary.get("result_completed_samples_per_sec") or summary.get("result_scheduled_samples_per_sec")
    else:
        ips = summary.get("result_samples_per_second")
    return {"throughput_ips": ips, "latency_ms_mean": _ms(summary.get("result_mean_latency_ns")),
            "latency_ms_p50": _ms(summary.get("result_50.00_percentile_latency_ns")),
            "latency_ms_p90": _ms(summary.get("result_90.00_percentile_latency_ns")),
            "latency_ms_p99": _ms(summary.get("result_99.00_percentile_latency_ns")),
            "loadgen_valid": summary.get("result_validity") == "VALID"}


def estimate_qps(runner, batch: np.ndarray, seconds: float = 0.5) -> float:
    """Images per second from a short warm-up: LoadGen's Offline needs an expected rate to size its query."""
    n, t0 = 0, time.perf_counter()
    while True:
        runner.run(batch)
        runner.synchronize()
        n += 1
        if time.perf_counter() - t0 >= seconds and n >= 2:
            return n * batch.shape[0] / (time.perf_counter() - t0)


def measure_scenario(runner, batch: np.ndarray, scenario: str, *, min_duration_s: float, min_queries: int,
                     server_latency_ms: float | None = None) -> dict:
    """Metrics for the throughput stage: headline figures + ``loadgen`` (the summary) + ``scenario``."""
    qps = estimate_qps(runner, batch)
    common = dict(min_duration_s=min_duration_s, expected_qps=qps)
    if scenario != "server":
        summary = run_loadgen(runner, batch, scenario, min_queries=min_queries if scenario == "singlestream" else 1,
                              **common)
        return {**metrics_of(summary, scenario), "scenario": scenario, "loadgen": summary}
    # the bound: by default 4 x one batch's time at the Offline rate (CPU figures are far from MLPerf's
    # 15 ms), at least 20 ms: a Python SUT's own per-query cost is a few milliseconds
    bound = server_latency_ms or max(20.0, 4 * 1000 * batch.shape[0] / qps)
    tried, best = [], None
    for frac in SERVER_FRACTIONS:
        target = qps * frac
        summary = run_loadgen(runner, batch, "server", min_queries=min_queries, server_qps=target,
                              server_latency_ms=bound, **common)
        valid = summary.get("result_validity") == "VALID"
        tried.append({"target_qps": target, "valid": valid,
                      "p99_ms": _ms(summary.get("result_99.00_percentile_latency_ns"))})
        if valid:
            best = summary
            break
    out = {"scenario": scenario, "server_latency_ms": bound, "server_tried": tried}
    if best is None:
        return {**out, "throughput_ips": None, "loadgen_valid": False, "loadgen": summary}
    return {**out, **metrics_of(best, "server"), "server_qps": best.get("effective_target_qps"), "loadgen": best}
