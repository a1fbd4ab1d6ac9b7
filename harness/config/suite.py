"""Suite files: one declarative `suite.yaml` per model, validated by pydantic.

A suite says where the model comes from, how its input is prepared, what it
is exported to, on which targets (device x runner x precision x batch sizes)
it runs, on which data its accuracy is measured and which documented
baselines apply. Nothing in a suite is Python: a new model is a new YAML file.
"""

from __future__ import annotations

import difflib
import os
import typing
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.config.timing import TimingSpec  # noqa: F401  (re-exported: part of the suite schema)
from harness.errors import UserError
from harness.fsio import read_user_text
from harness.vocab import DEVICE_NAMES, EXPORT_FORMATS, FORMAT_NAMES, PRECISIONS, SCENARIOS

SUITE_FORMAT_VERSION = 1

DeviceName = Literal[DEVICE_NAMES]
FormatName = Literal[FORMAT_NAMES]  # "native": the framework's own in-memory network
ExportFormat = Literal[EXPORT_FORMATS]
Precision = Literal[PRECISIONS]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceSpec(_Strict):
    """Where the network comes from."""

    kind: Literal["mindcv", "onnx", "pytorch"] = "mindcv"
    # mindcv architecture name (see harness.models.mindspore_net.ARCHS); for kind: pytorch
    # a timm model name (legacy_seresnext50_32x4d) or a harness one.
    arch: str | None = None
    num_classes: int = Field(1000, gt=0)
    # A trained MindSpore checkpoint. Without one the network is randomly
    # initialised from `seed`: fine for speed, meaningless for accuracy.
    checkpoint: str | None = None
    # Which trained weights the checkpoint (or ONNX file) holds, in
    # baselines.yaml's terms (`weights:` of a baseline, e.g. modelzoo or
    # cadene_a260b3a4). An accuracy baseline of other (or unnamed) weights is
    # "not_comparable", never pass/fail.
    weights: str | None = None
    # kind: onnx -> the model file itself (dynamic or fixed batch)
    path: str | None = None
    seed: int = 0
    # Random weights without a checkpoint: "scaled" (variance-preserving, so
    # logits have a realistic scale and parity checks mean something) or
    # "framework" (mindcv's own initialisation, whose logits nearly vanish).
    init: Literal["scaled", "framework"] = "scaled"
    # kind: pytorch -> the ONNX opset torch.onnx.export writes (11: the
    # document's PyTorch 1.6 era, accepted by older CANN atc releases).
    opset: int = Field(11, ge=7, le=23)

    @model_validator(mode="after")
    def _needs(self):
        if self.kind == "pytorch" and not self.arch:
            raise ValueError("source.kind 'pytorch' needs source.arch (a timm model, e.g. legacy_seresnext50_32x4d)")
        if self.kind == "mindcv" and not self.arch:
            raise ValueError("source.kind 'mindcv' needs source.arch (e.g. seresnext50_32x4d)")
        if self.kind == "onnx" and not self.path:
            raise ValueError("source.kind 'onnx' needs source.path (an .onnx file)")
        return self


class InputSpec(_Strict):
    size: int = Field(224, gt=0)
    channels: int = Field(3, gt=0)
    # Name of a preprocessing recipe in harness.data.RECIPES.
    preprocess: str = "imagenet_resize256_crop224"


class ParitySpec(_Strict):
    """How closely an export must match the framework on the same input."""

    batch_size: int = Field(1, gt=0)
    # Absolute tolerance on logits, scaled by the reference logits' std so a
    # randomly initialised network (tiny logits) and a trained one (large
    # logits) are held to the same standard.
    max_abs_diff_rel: float = Field(1e-3, gt=0)
    min_cosine: float = Field(0.9999, gt=0, le=1)


class DatasetSpec(_Strict):
    """Images whose labels are known. `synthetic` needs no files."""

    # imagefolder: root/<class>/<image>, label = folder index in sorted order;
    # flat: root/<image> plus label_file lines "ILSVRC2012_val_00000001.JPEG 65"
    kind: Literal["synthetic", "imagefolder", "flat"] = "synthetic"
    path: str | None = None
    label_file: str | None = None
    # synthetic: how many to generate; imagefolder/flat: only when given, the
    # first N (same as subset: {first: N}); by default every image is evaluated.
    num_images: int = Field(32, gt=0)
    seed: int = 0
    subset: "SubsetSpec | None" = None
    # An unreadable image: "error" (default, names the file) or "skip" (left
    # out, named in the result).
    on_corrupt: Literal["error", "skip"] = "error"
    # flat: files the label file lists but the folder lacks are an error unless
    # allowed (then "evaluated N of M" names them).
    allow_missing: bool = False
    # Expected image count (50000 for ImageNet val); a different count is
    # reported beside the figure, and is an error with require_complete.
    expected_images: int | None = Field(None, gt=0)
    require_complete: bool = False
    # Decode/preprocess threads, overlapping inference (0: in the caller).
    workers: int = Field(2, ge=0)
    # threads: `workers` threads in this process; processes: a pool of
    # `workers` processes (0: one per core), so decoding scales with the cores
    decode_pool: Literal["threads", "processes"] = "threads"
    # Keep preprocessed inputs on disk (memory-mapped float32, keyed by recipe
    # and file) under the artifact cache, so later runs skip decoding.
    prep_cache: bool = False

    @model_validator(mode="after")
    def _needs(self):
        if self.kind in ("imagefolder", "flat") and not self.path:
            raise ValueError(f"dataset.kind '{self.kind}' needs dataset.path")
        if self.kind == "flat" and not self.label_file:
            raise ValueError("dataset.kind 'flat' needs dataset.label_file (e.g. val_label.txt)")
        return self


class SubsetSpec(_Strict):
    """A recorded part of a dataset: the first N, or N per class drawn with `seed`."""

    first: int | None = Field(None, gt=0)
    per_class: int | None = Field(None, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _one(self):
        if (self.first is None) == (self.per_class is None):
            raise ValueError("subset needs exactly one of first: N or per_class: N")
        return self


DatasetSpec.model_rebuild()


class TargetSpec(_Strict):
    """One device x runner x precision, swept over batch sizes."""

    name: str | None = None
    device: DeviceName
    runner: str
    format: FormatName
    precision: Precision = "fp32"
    batch_sizes: list[int] = Field(default_factory=lambda: [1])
    # Stage names (harness.stages; checked against the registry by validate_suite).
    stages: list[str] = Field(default_factory=lambda: ["accuracy", "throughput"])
    device_id: int = 0
    # Runner-specific settings (e.g. onnxruntime provider options).
    options: dict = Field(default_factory=dict)
    timing: TimingSpec | None = None
    # Overrides the suite's accuracy_baselines for this target: the documents
    # give per-device figures (the 310 and 310P rows of seed 004). Every
    # target runs the suite's own model (an OM is converted from the suite's
    # export), so a listed baseline still applies only when its weights and
    # preprocessing match source.weights and input.preprocess; otherwise its
    # verdict is "not_comparable" and names the field.
    accuracy_baselines: list[str] | None = None
    # format om only: one dynamic-batch OM for all batch sizes instead of one
    # static OM each. true = gears are the target's batch_sizes; a list names
    # the gears (atc --dynamic_batch_size, 2 to 100 of them), which must hold
    # every batch size. Needs an ONNX whose graph does not fix the batch.
    dynamic_batch: bool | list[int] = False
    # throughput under MLPerf LoadGen (harness.metrics.loadgen): offline,
    # singlestream or server; harness = the harness's own timing loop
    scenario: Literal[SCENARIOS] = "harness"
    # Server scenario: the 99th-percentile latency bound (default: 4 x one
    # batch's time at the Offline rate)
    server_latency_ms: float | None = Field(default=None, gt=0)

    @field_validator("runner", mode="before")
    @classmethod
    def _runner_given(cls, v):
        if v is None:
            raise ValueError('runner is empty; YAML reads a bare null as "nothing": write runner: "null" '
                             "for the null runner")
        return v

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, v):
        if not v or any(b <= 0 for b in v):
            raise ValueError("batch_sizes must be a non-empty list of positive integers")
        return sorted(set(v))

    @model_validator(mode="after")
    def _dynamic_batch(self):
        if self.dynamic_batch is False:
            return self
        if self.format != "om":
            raise ValueError(f"dynamic_batch applies to format om only (this target's format is {self.format})")
        gears = self.batch_sizes if self.dynamic_batch is True else sorted(set(self.dynamic_batch))
        if not (2 <= len(gears) <= 100) or any(g < 1 for g in gears):
            raise ValueError(f"dynamic_batch needs 2 to 100 positive gears (atc's limit), got {gears}")
        missing = sorted(set(self.batch_sizes) - set(gears))
        if missing:
            raise ValueError(f"batch_sizes {missing} are not among the dynamic_batch gears {gears}")
        if self.dynamic_batch is not True:
            self.dynamic_batch = gears
        return self

    @model_validator(mode="after")
    def _name(self):
        if not self.name:
            self.name = f"{self.device}-{self.runner}-{self.precision}"
        return self


class Suite(_Strict):
    schema_version: Literal[1] = 1
    model: str = Field(..., description="key used in baselines.yaml, e.g. se_resnext50")
    description: str = ""
    source: SourceSpec
    input: InputSpec = Field(default_factory=InputSpec)
    export: list[ExportFormat] = Field(default_factory=lambda: ["onnx"])
    parity: ParitySpec = Field(default_factory=ParitySpec)
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    timing: TimingSpec = Field(default_factory=TimingSpec)
    targets: list[TargetSpec]
    # Accuracy baselines (ids in baselines.yaml) that apply when a trained
    # checkpoint and the documented dataset are configured.
    accuracy_baselines: list[str] = Field(default_factory=list)
    # How accuracy is held against them: "tolerance" (each baseline's own),
    # "mlperf" (>= 99% of the baseline, MLPerf's rule), or "both".
    accuracy_rule: Literal["tolerance", "mlperf", "both"] = "tolerance"

    # set by load_suite, not by the YAML
    path: Path | None = Field(default=None, exclude=True)
    # sections declared by stages (harness.stages.Stage.schema), validated by their models
    stage_config: dict = Field(default_factory=dict, exclude=True)

    @model_validator(mode="after")
    def _unique_targets(self):
        names = [t.name for t in self.targets]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"target names must be unique; repeated: {sorted(dup)}")
        return self

    def resolve(self, relative: str | None) -> Path | None:
        """A path from the suite, relative to the suite file, with ~ and $VARS expanded."""
        if relative is None:
            return None
        p = Path(os.path.expandvars(os.path.expanduser(relative)))
        if not p.is_absolute() and self.path is not None:
            p = self.path.parent / p
        return p

    def timing_for(self, target: TargetSpec) -> TimingSpec:
        return target.timing or self.timing


def _format_validation_error(err: ValidationError, prefix: tuple = ()) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in (*prefix, *e["loc"])) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "literal_error":
            msg = f"{msg} (got {e.get('input')!r})"
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


def _model_at(loc: tuple):
    """The pydantic model that holds the key at ``loc`` (("targets", 0, "batch_size") -> TargetSpec)."""
    model = Suite
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        inner = [a for a in (field.annotation, *typing.get_args(field.annotation)) if a is not None]
        inner += [b for a in inner for b in typing.get_args(a)]
        model = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return None
    return model


def _fix_for(exc: ValidationError, sections: dict | None) -> str:
    """The keys allowed where each unknown key sits, not only the top level's."""
    fixes = []
    for e in exc.errors():
        if e["type"] != "extra_forbidden":
            continue
        where = ".".join(str(x) for x in e["loc"][:-1])
        model = _model_at(tuple(e["loc"]))
        if model is Suite or not where:
            keys = [*(k for k in Suite.model_fields if k not in ("path", "stage_config")), *(sections or {})]
            text = f"top-level keys allowed: {', '.join(keys)}"
        elif model is not None:
            text = f"{where} takes: {', '.join(model.model_fields)}"
            close = difflib.get_close_matches(str(e["loc"][-1]), list(model.model_fields), n=1)
            if close:
                fixes.append(f"{where}.{e['loc'][-1]}: did you mean {close[0]}?")
        else:
            continue
        if text not in fixes:
            fixes.append(text)
    return "correct the keys listed" + ("; " + "; ".join(fixes) if fixes else "")


def load_suite(path: str | Path, sections: dict | None = None) -> Suite:
    """Read and validate a suite file. ``sections`` ({name: pydantic model})
    are the extra top-level sections that stages declare."""
    path = Path(path)
    if path.is_dir():
        path = path / "suite.yaml"
    if not path.is_file():
        raise UserError("suite file not found", path=path,
                        fix="pass a suite folder containing suite.yaml, e.g. suites/se_resnext50")
    try:
        data = yaml.safe_load(read_user_text(path, what="suite file"))
    except yaml.YAMLError as exc:
        raise UserError(f"not valid YAML: {exc}", path=path, fix="fix the YAML syntax at the line shown") from None
    if not isinstance(data, dict):
        raise UserError("a suite must be a YAML mapping (model:, source:, targets: ...)", path=path,
                        fix="see suites/se_resnext50/suite.yaml for the shape")
    version = data.get("schema_version", SUITE_FORMAT_VERSION)
    if version != SUITE_FORMAT_VERSION:
        raise UserError(f"schema_version {version!r} is not supported (this harness reads {SUITE_FORMAT_VERSION})",
                        path=path, fix="upgrade the harness, or write the suite in schema_version 1")
    extra = {}
    for name, model in (sections or {}).items():
        if name in data:
            section = data.pop(name) or {}
            unknown = sorted(set(section) - set(model.model_fields)) if isinstance(section, dict) else []
            if unknown:  # strict whatever the stage's model says: a typo never passes silently
                raise UserError("invalid suite:\n" + "\n".join(f"  - {name}.{k}: unknown key" for k in unknown),
                                path=path, fix=f"{name}: takes {', '.join(model.model_fields)}")
            try:
                extra[name] = model.model_validate(section)
            except ValidationError as exc:
                raise UserError(f"invalid suite:\n{_format_validation_error(exc, (name,))}", path=path,
                                fix=f"correct the keys listed; {name}: takes {', '.join(model.model_fields)}"
                                ) from None
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"invalid suite:\n{_format_validation_error(exc)}", path=path,
                        fix=_fix_for(exc, sections)) from None
    suite.path = path.resolve()
    suite.stage_config = extra
    return suite


def find_suites(paths: list[str | Path]) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
        elif (p / "suite.yaml").is_file():
            found.append(p / "suite.yaml")
        elif p.is_dir():
            found.extend(sorted(p.glob("*/suite.yaml")))
        else:
            raise UserError("no such suite file or folder", path=p, fix="check the path")
    return found
