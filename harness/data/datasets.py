"""Labelled image sets in the two ImageNet-val layouts, subsets, and a completeness record.

- class folders: ``root/<class>/<image>``; the label is the folder's index in
  sorted order (seeds 001 and 003);
- flat folder plus a label file: ``root/<image>`` and lines
  ``ILSVRC2012_val_00000001.JPEG 65`` (0-based, seed 004's ``val_label.txt``).

Whatever is listed but not evaluated is counted and named ("evaluated N of
M"), never dropped silently: duplicates (counted once), files a label file
lists that are absent (only when allowed), subsets (first N, or N per class
drawn with a recorded seed) and unreadable images skipped under an explicit
policy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.data.labels import read_label_file
from harness.data.recipes import IMAGE_SUFFIXES
from harness.data.samples import Sample
from harness.errors import UserError


@dataclass
class Dataset:
    samples: list[Sample]
    root: Path
    layout: str  # "imagefolder" | "flat" | "synthetic"
    listed: int  # M: the entries the layout lists (after removing duplicates)
    missing: list[str] = field(default_factory=list)
    duplicates: int = 0
    ignored: list[str] = field(default_factory=list)  # files in the folder that are not images
    subset: dict | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, why), filled while evaluating

    def completeness(self, evaluated: int) -> dict:
        """The record stored with an accuracy result."""
        return {
            "layout": self.layout,
            "evaluated": evaluated,
            "listed": self.listed,
            "missing": self.missing[:100],
            "num_missing": len(self.missing),
            "duplicates": self.duplicates,
            "ignored_files": self.ignored[:20],
            "subset": self.subset,
            "skipped": [{"file": n, "why": w} for n, w in self.skipped[:100]],
            "num_skipped": len(self.skipped),
        }

    def summary(self, evaluated: int) -> str:
        parts = [f"evaluated {evaluated} of {self.listed}"]
        if self.subset:
            parts.append("subset " + ", ".join(f"{k}={v}" for k, v in self.subset.items() if k != "names_sha256"))
        if self.missing:
            parts.append(f"{len(self.missing)} listed but absent ({', '.join(self.missing[:3])}"
                         f"{' ...' if len(self.missing) > 3 else ''})")
        if self.skipped:
            parts.append(f"{len(self.skipped)} unreadable skipped ({', '.join(n for n, _ in self.skipped[:3])}"
                         f"{' ...' if len(self.skipped) > 3 else ''})")
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicate entries counted once")
        return "; ".join(parts)


def _images_in(folder: Path) -> tuple[list[Path], list[str]]:
    images, other = [], []
    for p in sorted(folder.iterdir()):
        if p.is_file():
            (images if p.suffix.lower() in IMAGE_SUFFIXES else other).append(p)
    return images, [p.name for p in other]


def image_folder(root: str | Path, num_classes: int | None = None) -> Dataset:
    """Class-folder layout; with ``num_classes`` the folder count must match it exactly
    (one folder too many or too few shifts every label after it)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError("dataset folder not found", path=root, fix="set dataset.path in the suite to an existing folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    loose, _ = _images_in(root)
    if not classes:
        hint = (f" but {len(loose)} images lie directly in it: a flat layout needs dataset.kind: flat and "
                "dataset.label_file") if loose else ""
        raise UserError(f"dataset folder has no class sub-folders{hint}", path=root,
                        fix="use the layout root/<class>/<image>.JPEG (label = folder's index in sorted order)")
    if num_classes is not None and len(classes) != num_classes:
        odd = [c for c in classes if c.startswith((".", "_"))]
        if len(classes) > num_classes:
            what = f"{len(classes) - num_classes} class folder(s) too many"
        else:
            what = f"{num_classes - len(classes)} class folder(s) too few"
        raise UserError(
            f"{len(classes)} class folders for a {num_classes}-class model ({what}): labels are folder "
            f"indices in sorted order, so every label after the odd folder would shift"
            + (f"; suspicious folders: {odd}" if odd else f"; first folders: {classes[:3]}, last: {classes[-3:]}"),
            path=root, fix="remove the extra folders (or use dataset.kind: flat with a label file)")
    samples, ignored = [], []
    for label, cls in enumerate(classes):
        images, other = _images_in(root / cls)
        ignored += [f"{cls}/{n}" for n in other]
        samples += [Sample(f"{cls}/{p.name}", label, path=p) for p in images]
    if not samples:
        raise UserError(f"dataset folder holds no images in its {len(classes)} class folders", path=root,
                        fix=f"check dataset.path; image suffixes read: {', '.join(sorted(IMAGE_SUFFIXES))}")
    return Dataset(samples, root, "imagefolder", listed=len(samples), ignored=ignored)


def flat_folder(root: str | Path, label_file: str | Path, *, allow_missing: bool = False,
                num_classes: int | None = None) -> Dataset:
    """A flat folder plus a label file. Images without a row, and (unless
    ``allow_missing``) rows without an image, are errors naming the files."""
    root, label_file = Path(root), Path(label_file)
    if not root.is_dir():
        raise UserError("dataset folder not found", path=root, fix="set dataset.path to the folder of val images")
    lf = read_label_file(label_file, num_classes)
    labels, dup = lf.labels, lf.duplicates
    images, ignored = _images_in(root)
    if not images:
        raise UserError("dataset folder holds no images", path=root,
                        fix=f"check dataset.path; image suffixes read: {', '.join(sorted(IMAGE_SUFFIXES))}")
    present = {p.name: p for p in images}
    unlabelled = [n for n in present if n not in labels]
    if unlabelled:
        raise UserError(f"{len(unlabelled)} images have no row in {label_file.name} (the label file misses rows "
                        f"or is for another set): {', '.join(unlabelled[:10])}", path=label_file,
                        fix="use the label file that belongs to these images, or remove the extra images")
    missing = sorted(n for n in labels if n not in present)
    if missing and not allow_missing:
        raise UserError(f"{len(missing)} of the {len(labels)} files listed in {label_file.name} are not in {root}: "
                        f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}", path=label_file,
                        fix="copy the missing images, or set dataset.allow_missing: true to evaluate those present "
                            "(the result then says 'evaluated N of M' and names the absent files)")
    samples = [Sample(n, labels[n], path=present[n]) for n in sorted(present)]
    return Dataset(samples, root, "flat", listed=len(labels), missing=missing, duplicates=dup, ignored=ignored)


def take_subset(ds: Dataset, *, first: int | None = None, per_class: int | None = None, seed: int = 0) -> Dataset:
    """First N (in the layout's sorted order), or N per class drawn with ``seed``; recorded on the dataset."""
    if first is None and per_class is None:
        return ds
    if first is not None and per_class is not None:
        raise UserError("give either subset.first or subset.per_class, not both")
    if first is not None:
        chosen = ds.samples[:first]
        ds.subset = {"first": first}
    else:
        rng = np.random.default_rng(seed)
        by_class: dict[int, list[Sample]] = {}
        for s in ds.samples:
            by_class.setdefault(s.label, []).append(s)
        chosen = []
        for label in sorted(by_class):
            group = by_class[label]
            idx = sorted(rng.choice(len(group), size=min(per_class, len(group)), replace=False))
            chosen += [group[i] for i in idx]
        ds.subset = {"per_class": per_class, "seed": seed}
    ds.subset["names_sha256"] = hashlib.sha256("\n".join(s.name for s in chosen).encode()).hexdigest()[:16]
    ds.samples = chosen
    return ds


def from_spec(spec, resolve, *, num_classes: int | None = None) -> Dataset:
    """The dataset a suite's ``dataset:`` section names (subset applied and recorded).

    ``resolve`` turns the suite's relative paths into paths (``Suite.resolve``).
    """
    root = resolve(spec.path)
    if spec.kind == "flat":
        ds = flat_folder(root, resolve(spec.label_file), allow_missing=spec.allow_missing,
                         num_classes=num_classes)
    else:
        ds = image_folder(root, num_classes=num_classes)
    if spec.subset is not None:
        ds = take_subset(ds, first=spec.subset.first, per_class=spec.subset.per_class, seed=spec.subset.seed)
    elif "num_images" in spec.model_fields_set:
        ds = take_subset(ds, first=spec.num_images)
    return ds
