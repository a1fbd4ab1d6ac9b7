"""Write scikit-learn's handwritten digits (``sklearn.datasets.load_digits``:
1797 real 8x8 scans of digits 0-9, shipped inside the package, no download) as
PNG class folders with a seeded, stratified train/val split, and print a
reference Top-1/Top-5 computed outside the harness on the same split
(scikit-learn's LogisticRegression on the raw pixels).

    python3 examples/digits/make_digits.py [--out examples/digits/data] [--val 0.25] [--seed 0]

writes ``<out>/train/<digit>/*.png`` and ``<out>/val/<digit>/*.png`` (32x32,
greyscale: each 8x8 scan upscaled 4x, nearest neighbour, 0..16 -> 0..255) and
``<out>/reference.json``. The same seed always writes the same files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def split(labels: np.ndarray, val: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified: ``val`` of each class (rounded) to val, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(val * len(idx)))
        held.extend(idx[:k])
        train.extend(idx[k:])
    return np.sort(np.asarray(train)), np.sort(np.asarray(held))


def reference(x_train, y_train, x_val, y_val) -> dict:
    """Top-1/Top-5 (%) of a multinomial logistic regression on the raw pixels."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=5000).fit(x_train / 16.0, y_train)
    proba = clf.predict_proba(x_val / 16.0)
    top5 = np.argsort(-proba, axis=1)[:, :5]
    classes = clf.classes_
    return {"model": "sklearn.linear_model.LogisticRegression(max_iter=5000) on pixels/16",
            "top1": float(100 * np.mean(classes[top5[:, 0]] == y_val)),
            "top5": float(100 * np.mean((classes[top5] == y_val[:, None]).any(axis=1))),
            "train_images": int(len(y_train)), "val_images": int(len(y_val))}


def write(out: Path, val: float = 0.25, seed: int = 0) -> dict:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = d.data, d.target
    tr, va = split(y, val, seed)
    for part, idx in (("train", tr), ("val", va)):
        for i in idx:
            folder = out / part / str(int(y[i]))
            folder.mkdir(parents=True, exist_ok=True)
            img = (d.images[i] * (255.0 / 16.0)).round().astype(np.uint8)
            Image.fromarray(img, "L").resize((32, 32), Image.NEAREST).save(folder / f"digit_{i:04d}.png")
    ref = reference(x[tr], y[tr], x[va], y[va]) | {"seed": seed, "val_fraction": val}
    (out / "reference.json").write_text(json.dumps(ref, indent=2) + "\n")
    return ref


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "data"))
    ap.add_argument("--val", type=float, default=0.25, help="held-out fraction of each class")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    ref = write(Path(a.out), a.val, a.seed)
    print(f"wrote {ref['train_images']} train / {ref['val_images']} val images under {a.out}")
    print(f"reference (outside the harness, same split): top1 {ref['top1']:.2f}%, top5 {ref['top5']:.2f}% "
          f"[{ref['model']}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
