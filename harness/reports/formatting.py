"""How numbers and verdicts are written on the page: measured values formatted, documented ones as given."""

from __future__ import annotations


def num(v, spec: str) -> str:
    if v is None:
        return "—"
    try:
        return format(float(v), spec)
    except (TypeError, ValueError):
        return str(v)


def halfwidth(m: dict) -> float | None:
    """Half the width of a throughput result's 95% interval over repetitions, or None where none was measured."""
    lo, hi = m.get("throughput_ci_lo"), m.get("throughput_ci_hi")
    if not all(isinstance(x, (int, float)) for x in (lo, hi)):
        return None
    return (hi - lo) / 2


def doc(v) -> str:
    """A documented figure as baselines.yaml holds it: no rounding, no padding."""
    f = float(v)
    return str(int(f)) if f.is_integer() else repr(f)


def ms(v) -> str:
    if v is None:
        return "—"
    return num(v, ".3g") if abs(float(v)) < 1 else num(v, ".2f")


def tolerance(tol: dict | None) -> str:
    if not tol:
        return ""
    parts = []
    if tol.get("abs") is not None:
        parts.append(f"±{doc(tol['abs'])}")
    if tol.get("rel") is not None:
        parts.append(f"±{doc(100 * tol['rel'])}%")
    return " or ".join(parts)


def verdict_view(v: dict) -> dict:
    src = v.get("source") or {}
    return {
        "id": v.get("id"), "value": doc(v["value"]) if v.get("value") is not None else "—",
        "unit": v.get("unit") or "", "verdict": v.get("verdict") or "—", "reason": v.get("reason") or "",
        "tolerance": tolerance(v.get("tolerance")), "document": src.get("document", ""),
        "section": src.get("section", ""),
    }


def weights_text(m: dict) -> str:
    """Where an accuracy result's weights came from: loaded (the checkpoint's
    digest) or trained here (target, steps, training data digest, final loss)."""
    origin = m.get("weights_origin") or {}
    if "trained" in origin:
        t = origin["trained"]
        loss = f"{t['final_loss']:.4f}" if isinstance(t.get("final_loss"), (int, float)) else "?"
        text = (f"trained here ({t.get('target')}: {t.get('steps')} steps, {t.get('train_images')} images, "
                f"data sha256 {str(t.get('train_data_sha256'))[:12]}, final loss {loss})")
        return text + ("; TRAINED ON THE EVALUATION IMAGES, not judged" if m.get("trained_on_eval") else "")
    if "loaded" in origin:
        lo = origin["loaded"]
        return f"loaded {lo.get('checkpoint')} (sha256 {str(lo.get('sha256'))[:12]})"
    return ""
