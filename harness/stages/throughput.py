"""Stage `throughput`: throughput and latency at one batch size, held against the documents."""

from __future__ import annotations

from harness.metrics.timing import measure
from harness.stages.base import Stage


class ThroughputStage(Stage):
    name = "throughput"

    def run(self, case, ctx, res):
        suite = case.suite
        x = ctx.inputs(suite, case.batch_size)
        with ctx.runner(case, res, ctx.target_artifact(case, res)) as runner:
            timing = measure(runner, x, ctx.timing(suite, case.target))
            res.metrics.update(getattr(runner, "extra_metrics", dict)())
        res.metrics.update(timing.as_metrics())
        res.reason = (f"{timing.throughput_ips:.2f} img/s, p50 {timing.latency_ms_p50:.2f} ms, "
                      f"cv {100 * timing.cv:.1f}%")
        if timing.unstable:
            res.reason += " (unstable: cv >= 10%)"
        if timing.truncated:
            res.reason += f" (stopped at max_duration_s after {timing.iterations} iterations)"
        ctx.hold_baselines(case, res, "throughput_ips", timing.throughput_ips)
