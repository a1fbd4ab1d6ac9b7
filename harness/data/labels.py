"""Label files: ``<image file name> <class index>`` per line (ImageNet's val_label.txt).

The one reader, used by flat datasets and by ais_bench output scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError
from harness.fsio import read_user_text

FIX = "one 'ILSVRC2012_val_00000001.JPEG 65' pair per line, 0-based class index"


@dataclass
class LabelFile:
    path: Path
    labels: dict[str, int]  # file name (no folder) -> class index
    duplicates: int  # lines repeating an earlier pair

    def by_stem(self) -> dict[str, int]:
        """Keyed by the name without its suffix ("ILSVRC2012_val_00000001"), as tools name their outputs."""
        return {Path(name).stem: label for name, label in self.labels.items()}


def read_label_file(path: str | Path, num_classes: int | None = None) -> LabelFile:
    """Read a label file; blank and ``#`` lines are skipped, a repeated identical
    pair counts once, and a name listed with two labels is an error. A negative
    label, or (given ``num_classes``) one past the model's classes, is an error
    naming the file and its line."""
    path = Path(path)
    if not path.is_file():
        raise UserError("label file not found", path=path,
                        fix="set dataset.label_file to val_label.txt (lines 'ILSVRC2012_val_00000001.JPEG 65')")
    labels: dict[str, int] = {}
    dup = 0
    for lineno, line in enumerate(read_user_text(path, what="label file").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise UserError(f"line {lineno} is not '<file name> <class index>': {line.strip()[:80]!r}", path=path,
                            fix=FIX)
        name, label = Path(parts[0]).name, int(parts[1])
        if label < 0 or (num_classes is not None and label >= num_classes):
            span = f"0 to {num_classes - 1}" if num_classes is not None else "0 or more"
            raise UserError(f"line {lineno}: label {label} of {name} is out of range (class indices run {span}"
                            f"{f' for this {num_classes}-class model' if num_classes is not None else ''})",
                            path=path, fix=FIX + "; fix or remove that line (or check source.num_classes)")
        if name in labels:
            if labels[name] != label:
                raise UserError(f"line {lineno}: {name} listed twice with labels {labels[name]} and {label}",
                                path=path, fix="remove the wrong line")
            dup += 1
            continue
        labels[name] = label
    if not labels:
        raise UserError("label file is empty", path=path, fix="regenerate it from the ImageNet devkit")
    return LabelFile(path, labels, dup)
