"""Top-1/Top-5 accumulated batch by batch, so no dataset-sized array is held."""

from __future__ import annotations

import numpy as np

from harness.errors import UserError


class TopK:
    def __init__(self, ks=(1, 5)):
        self.ks = tuple(sorted(ks))
        self.correct = {k: 0 for k in self.ks}
        self.count = 0

    def update(self, logits: np.ndarray, labels: np.ndarray, *, where: str = "model output") -> None:
        logits = np.asarray(logits)
        labels = np.asarray(labels).reshape(-1)
        if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
            raise UserError(f"logits of shape {logits.shape} do not match {labels.shape[0]} labels", path=where,
                            fix="the model must output (batch, classes) logits")
        if not np.all(np.isfinite(logits)):
            bad = int((~np.isfinite(logits)).any(axis=1).sum())
            raise UserError(f"{bad} of {len(logits)} samples have NaN/inf logits", path=where,
                            fix="check the checkpoint and the preprocessing (wrong normalisation overflows fp16)")
        if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
            bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
            raise UserError(f"a dataset label ({bad}) is out of range for the model's {logits.shape[1]} classes "
                            f"(model output: {where})",
                            fix="the label file (or class folders) and source.num_classes disagree")
        kmax = min(max(self.ks), logits.shape[1])
        # argpartition is O(classes) per row; only the top kmax need sorting.
        top = np.argpartition(-logits, kmax - 1, axis=1)[:, :kmax]
        order = np.take_along_axis(logits, top, axis=1).argsort(axis=1)[:, ::-1]
        top = np.take_along_axis(top, order, axis=1)
        hits = top == labels[:, None]
        for k in self.ks:
            self.correct[k] += int(hits[:, :k].any(axis=1).sum())
        self.count += int(labels.shape[0])

    def result(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("no samples evaluated")
        out = {f"top{k}": 100.0 * self.correct[k] / self.count for k in self.ks}
        out["num_images"] = self.count
        return out
