"""Stage `throughput`: throughput and latency at one batch size, held against the documents.

The figure is the median over repetitions with its 95% interval
(harness.metrics.timing); a result that stayed contended is stored and shown
as such, and is never held against a documented figure.
"""

from __future__ import annotations

from harness.metrics.timing import measure
from harness.stages.base import Stage


def describe(t) -> str:
    """One line for the terminal and the report: value +- half-width, precision, flags."""
    text = (f"{t.throughput_ips:.2f} ± {t.halfwidth:.2f} img/s (95% CI over "
            f"{sum(r['used'] for r in t.repetitions)} repetitions, ±{100 * t.throughput_rel_halfwidth:.1f}%), "
            f"p50 {t.latency_ms_p50:.2f} ms")
    if t.contended:
        text += f" (CONTENDED: other processes were busy in {t.n_contended} of {len(t.repetitions)} repetitions)"
    elif t.n_contended:
        text += f" ({t.n_contended} contended repetition(s) measured again)"
    if not t.precise:
        text += f" (imprecise: stopped by {t.stopped_by})"
    if t.unstable:
        text += f" (unstable: per-iteration cv {100 * t.cv:.0f}%)"
    if not t.warmup_steady:
        text += " (no steady state detected in warm-up)"
    if t.truncated:
        text += " (stopped at max_duration_s before its minimum repetitions)"
    return text


class ThroughputStage(Stage):
    name = "throughput"

    def run(self, case, ctx, res):
        suite = case.suite
        x = ctx.inputs(suite, case.batch_size)
        with ctx.runner(case, res, ctx.target_artifact(case, res)) as runner:
            timing = measure(runner, x, ctx.timing(suite, case.target))
            res.metrics.update(getattr(runner, "extra_metrics", dict)())
        res.metrics.update(timing.as_metrics())
        res.reason = describe(timing)
        if timing.contended:
            return  # the neighbour's figure as much as ours: held against nothing
        ctx.hold_baselines(case, res, "throughput_ips", timing.throughput_ips)
