"""How far an exported model's outputs are from the framework's on one input."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Parity:
    max_abs_diff: float
    # max_abs_diff divided by the reference logits' standard deviation
    max_abs_diff_rel: float
    cosine: float
    top1_agree: float
    passed: bool
    reason: str

    def as_metrics(self) -> dict:
        return asdict(self)


def compare_outputs(reference: np.ndarray, candidate: np.ndarray, *, max_abs_diff_rel: float,
                    min_cosine: float) -> Parity:
    ref = np.asarray(reference, np.float64).reshape(len(reference), -1)
    cand = np.asarray(candidate, np.float64).reshape(len(candidate), -1)
    if ref.shape != cand.shape:
        return Parity(float("inf"), float("inf"), 0.0, 0.0, False,
                      f"output shapes differ: reference {ref.shape}, export {cand.shape}")
    if not np.all(np.isfinite(cand)):
        return Parity(float("inf"), float("inf"), 0.0, 0.0, False, "export produced NaN/inf")
    diff = float(np.abs(ref - cand).max())
    scale = float(ref.std()) or 1.0
    rel = diff / scale
    num = (ref * cand).sum(axis=1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cos = float(np.min(np.where(den > 0, num / np.where(den > 0, den, 1), 1.0)))
    agree = float((ref.argmax(axis=1) == cand.argmax(axis=1)).mean())
    problems = []
    if rel > max_abs_diff_rel:
        problems.append(f"max abs diff {diff:.3g} is {rel:.3g} x the logit std (allowed {max_abs_diff_rel:g})")
    if cos < min_cosine:
        problems.append(f"cosine {cos:.6f} < {min_cosine}")
    return Parity(diff, rel, cos, agree, not problems, "; ".join(problems) or "within tolerance")
