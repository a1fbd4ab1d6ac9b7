"""Stage `throughput`: throughput and latency at one batch size, held against the documents.

The figure is the median over repetitions with its 95% interval
(harness.metrics.timing); a result that stayed contended is stored and shown
as such, and is never held against a documented figure.
"""

from __future__ import annotations

import numpy as np

from harness.errors import CaseFailed, CaseSkipped, UserError
from harness.metrics import efficiency, loadgen
from harness.metrics.timing import measure
from harness.runners.devices import cpu_model, device_model
from harness.stages.base import Stage, torch_native
from harness.vocab import DEVICES


def describe(t) -> str:
    """One line for the terminal and the report: value +- half-width, precision, flags."""
    # within-run: repetitions of one run share its machine state; `harness gate` prints the
    # interval widened by the key's between-run spread beside it (harness.analysis.pooled)
    text = (f"{t.throughput_ips:.2f} ± {t.halfwidth:.2f} img/s (within-run 95% CI over "
            f"{sum(r['used'] for r in t.repetitions)} repetitions, ±{100 * t.throughput_rel_halfwidth:.1f}%), "
            f"p50 {t.latency_ms_p50:.2f} ms")
    if t.host_scope:  # a device-scope figure with the host clock around the same runs beside it
        h = t.host_scope
        text = (f"device scope {text}; host scope {h['throughput_ips']:.2f} img/s "
                f"[{h['throughput_ci_lo']:.2f}, {h['throughput_ci_hi']:.2f}], p50 {h['latency_ms_p50']:.2f} ms")
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


def efficiency_metrics(case, ctx, res, throughput_ips: float) -> dict:
    """GFLOP/s from the ONNX graph's operation count and the fraction of the peak (harness.metrics.efficiency).
    Left out, saying why, when no ONNX graph of the model is at hand."""
    suite = case.suite
    torch = case.target is not None and torch_native(case.target)
    if case.format != "onnx" and "onnx" not in (suite.export or []) and not torch:
        return {"efficiency_note": "no ONNX export of this model to count operations from"}
    try:
        onnx_path = (ctx.models.torch_onnx(suite, case.batch_size) if torch else
                     ctx.models.artifact(suite, "onnx", case.batch_size, case.device)).path
        size = suite.input.size
        ops = efficiency.count_ops(onnx_path, case.batch_size, (case.batch_size, 3, size, size))
    except Exception as exc:  # noqa: BLE001 - efficiency is an addition; the measurement stands without it
        return {"efficiency_note": f"operations not counted: {type(exc).__name__}: {exc}"}
    if DEVICES[case.device].detector == "host":  # the CPU: its ISA ceiling, the measured GEMM beside
        gemm = efficiency.host_peak(ctx.models.cache.root, cpu_model=cpu_model())
        return efficiency.cpu_efficiency(throughput_ips, ops, gemm, efficiency.host_ceiling())
    else:
        model = res.metrics.get("gpu_model") or res.metrics.get("device_model") or device_model(case.device)
        precision = res.metrics.get("peak_precision") or (case.target.precision if case.target else None)
        peak = efficiency.published_peak(model, precision)
        if peak is None:
            return {**efficiency.efficiency(throughput_ips, ops, None),
                    "efficiency_note": f"no published peak held for {model or case.device} at this precision"}
    out = efficiency.efficiency(throughput_ips, ops, peak)
    return out


def _nonfinite(outputs: dict) -> dict:
    """{"first": "3 of 12 values NaN/inf", ...} for the kept outputs that are not all finite."""
    out = {}
    for k, v in outputs.items():
        try:
            a = np.asarray(v[0] if isinstance(v, (list, tuple)) else v, dtype=np.float64)
        except (TypeError, ValueError):
            continue
        n = int(a.size - np.count_nonzero(np.isfinite(a)))
        if n:
            out[k] = f"{n} of {a.size} values NaN/inf"
    return out


class ThroughputStage(Stage):
    name = "throughput"

    def run(self, case, ctx, res):
        suite = case.suite
        ctx.check_memory(case)
        x = ctx.inputs(suite, case.batch_size)
        scenario = ctx.scenario_override or (case.target.scenario if case.target is not None else "harness")
        res.scenario = scenario
        if scenario != "harness":
            return self._run_loadgen(case, ctx, res, x, scenario)
        outputs: dict = {}
        with ctx.runner(case, res, ctx.target_artifact(case, res)) as runner:
            timing = measure(runner, x, ctx.timing(suite, case.target), outputs=outputs)
            res.metrics.update(getattr(runner, "extra_metrics", dict)())
        res.metrics.update(timing.as_metrics())
        res.reason = describe(timing)
        bad = _nonfinite(outputs)
        if bad:  # a fast model that outputs garbage is no figure: stored, flagged, never held against anything
            res.metrics["nonfinite_outputs"] = bad
            what = "; ".join(f"{k} timed run: {v}" for k, v in bad.items())
            raise UserError(f"the model's outputs are not finite ({what}), so its timing measures nothing",
                            path=ctx.model_file(case),
                            fix="check the model file and its weights (NaN/inf weights, an fp16 overflow, or an "
                                "export that went wrong)")
        res.metrics.update(efficiency_metrics(case, ctx, res, timing.throughput_ips))
        if timing.contended:
            return  # the neighbour's figure as much as ours: held against nothing
        ctx.hold_baselines(case, res, "throughput_ips", timing.throughput_ips)

    def _run_loadgen(self, case, ctx, res, x, scenario: str) -> None:
        why = loadgen.available()
        if why:
            raise CaseSkipped(why)
        cfg = ctx.timing(case.suite, case.target)
        with ctx.runner(case, res, ctx.target_artifact(case, res)) as runner:
            m = loadgen.measure_scenario(runner, x, scenario, min_duration_s=cfg.min_duration_s,
                                         min_queries=cfg.min_iterations,
                                         server_latency_ms=getattr(case.target, "server_latency_ms", None))
            res.metrics.update(getattr(runner, "extra_metrics", dict)())
        res.metrics.update(m)
        lg = m["loadgen"]
        validity = lg.get("result_validity", "no result")
        early = lg.get("early_stopping_result") or ""
        if m.get("throughput_ips") is None:
            tried = ", ".join(f"{t['target_qps']:.1f}" for t in m.get("server_tried", []))
            raise CaseFailed(f"LoadGen {scenario}: no target rate met the {m.get('server_latency_ms', 0):.1f} ms "
                             f"bound (tried {tried} QPS)")
        head = {"offline": f"{m['throughput_ips']:.2f} samples/s",
                "singlestream": f"p90 {m['latency_ms_p90']:.2f} ms",
                "server": f"{m['throughput_ips']:.2f} QPS within p99 <= {m.get('server_latency_ms', 0):.1f} ms"}[scenario]
        res.reason = f"LoadGen {scenario}: {head}, {validity}" + (f"; early stopping: {early.strip()}" if early else "")
        res.metrics.update(efficiency_metrics(case, ctx, res, m["throughput_ips"]))
        if scenario == "offline" and m["loadgen_valid"]:
            # the Offline rate is the figure the documents' throughput tables hold
            ctx.hold_baselines(case, res, "throughput_ips", m["throughput_ips"])
