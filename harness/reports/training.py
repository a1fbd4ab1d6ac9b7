"""The training section of the report and the README's training table.

Report: per model, one row per train case (setting, step time, images/s,
first step, peak memory, learns check, the documented figure it was held
against or why none) and the loss and LR curves as small inline SVGs.
README: ``<!-- harness:table kind=training model=xception source=... -->``
gives the documents' 训练性能 shape: parameters down, settings across.
"""

from __future__ import annotations

from html import escape

from harness.analysis.verdicts import verdicts_of
from harness.vocab import device_label


def _polyline(values: list[float], width: int = 220, height: int = 60, colour: str = "#1f77b4") -> str | None:
    vals = [v for v in values if isinstance(v, (int, float))]
    if len(vals) < 2:
        return None
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    pts = " ".join(f"{i * (width - 4) / (len(vals) - 1) + 2:.1f},{height - 2 - (v - lo) / span * (height - 4):.1f}"
                   for i, v in enumerate(vals))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">'
            f'<title>{escape(f"{lo:.4g} .. {hi:.4g} over {len(vals)} steps")}</title>'
            f'<rect width="{width}" height="{height}" fill="none" stroke="#ccc"/>'
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{pts}"/></svg>')


def _fmt(v, unit="", digits=1):
    return "—" if not isinstance(v, (int, float)) else f"{v:.{digits}f}{unit}"


def training_rows(results) -> list[dict]:
    """One row per train result (any status), for the report."""
    rows = []
    for r in results:
        if r.stage != "train":
            continue
        m, t = r.metrics, r.metrics.get("train_target", {})
        held = "; ".join(f"{v.verdict}: {v.reason}" for v in verdicts_of(r.baseline))
        rows.append({
            "case": r.case, "status": r.status, "reason": r.reason, "device": device_label(r.device),
            "setting": (f"{t.get('framework', r.runner)} x{t.get('num_devices', 1)}, batch {r.batch_size}, "
                        f"{t.get('image_size', '?')} px, {r.precision}" + (" (reduced)" if t.get("reduced") else "")
                        + (", channels_last" if t.get("channels_last") else "")
                        + (f", compile={t['compile']}" if t.get("compile") else "")),
            "step_ms": _fmt(m.get("train_step_ms")), "p90": _fmt(m.get("train_step_ms_p90")),
            "ips": _fmt(m.get("train_images_per_s")), "first_s": _fmt(m.get("train_first_step_s"), " s", 2),
            "host_mb": _fmt(m.get("train_peak_host_mb"), "", 0), "device_mb": _fmt(m.get("train_peak_device_mb"), "", 0),
            "learns": _fmt(m.get("train_learns_drop") and 100 * m["train_learns_drop"], " %"),
            "documented": held or m.get("baseline_note", ""),
            "loss_svg": _polyline(m.get("learns_curve", []) + m.get("loss_curve", [])),
            "lr_svg": _polyline(m.get("lr_curve", []), colour="#d62728"),
            "recipe": m.get("train_recipe"),
        })
    return rows


def training_table(params: dict, bf, history) -> str:
    """The documents' training-performance table for one model: documented
    8-device figures (source=documented) or the newest measured train cases."""
    model = params["model"]
    cols: list[tuple[str, dict]] = []
    if params["source"] == "documented":
        by_dev: dict[tuple, dict] = {}
        for b in bf.baselines:
            if b.model == model and b.metric.startswith("train_") and (b.epoch or 2) > 1:
                d = by_dev.setdefault((b.device, b.num_devices), {
                    "batch": b.batch_size, "devices": b.num_devices,
                    "precision": b.precision or "mixed (document's 混合精度)"})
                d.setdefault(b.metric, b.value)
                d["batch"] = d["batch"] or b.batch_size
        cols = [(f"{device_label(dev)} x{n or '?'} (documented)", d) for (dev, n), d in by_dev.items()]
    else:
        newest: dict[str, object] = {}
        for r in (history.results if history is not None else []):
            if r.model == model and r.stage == "train" and r.status == "passed":
                newest[r.case] = r
        for r in newest.values():
            m, t = r.metrics, r.metrics.get("train_target", {})
            cols.append((f"{device_label(r.device)} {r.target} (measured{', reduced' if t.get('reduced') else ''})",
                         {"batch": r.batch_size, "devices": t.get("num_devices"), "precision": r.precision,
                          "train_step_ms": m.get("train_step_ms"), "train_images_per_s": m.get("train_images_per_s"),
                          "train_loss": m.get("train_loss"),
                          "optimizer": (m.get("train_recipe") or {}).get("optimizer")}))
    rows = [("batch size per device", "batch", "{}"), ("devices", "devices", "{}"), ("precision", "precision", "{}"),
            ("optimizer", "optimizer", "{}"), ("speed (ms/step)", "train_step_ms", "{:.1f}"),
            ("images/s (all devices)", "train_images_per_s", "{:.1f}"), ("loss", "train_loss", "{:.3f}"),
            ("total time (h)", "train_total_h", "{:g}")]
    for _, d in cols:
        if "train_images_per_s" not in d and d.get("train_step_ms") and d.get("batch"):
            d["train_images_per_s"] = d["batch"] * (d.get("devices") or 1) / d["train_step_ms"] * 1000
    lines = ["| parameter | " + " | ".join(c for c, _ in cols) + " |", "|---|" + "---|" * len(cols)]
    for label, key, f in rows:
        if any(d.get(key) is not None for _, d in cols):
            lines.append(f"| {label} | " + " | ".join(f.format(d[key]) if d.get(key) is not None else "—"
                                                       for _, d in cols) + " |")
    src = "Documented (baselines.yaml; epoch-1 figures, which include compilation, left out)" \
        if params["source"] == "documented" else "Measured by the harness (newest passed train case)"
    return "\n".join(lines) + f"\n\n_{src}._"
