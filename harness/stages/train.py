"""Stage `train`: brief training with the document's recipe.

Per train target (device, framework, precision, per-device batch, devices)
it runs the learns check (the loss on a fixed batch must fall by a declared
fraction within N steps) and a timed run on augmented generated images with
the recipe's optimizer, loss scale and LR schedule; it stores step time
(steady state, mean and percentiles), images/s, time to the first step,
peak memory and the loss and LR curves, and holds step time against the
documents' figures only when device family, per-device batch, device count
and precision all match. The suite's ``train:`` section is its schema.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.analysis.comparability import device_model_matches
from harness.analysis.verdicts import hold
from harness.config.baselines import select
from harness.errors import CaseFailed, CaseSkipped, UserError
from harness.models.torch_reference import need_mindspore, need_torch
from harness.stages.base import Case, Stage
from harness.train import common as tc
from harness.train import launchers
from harness.train import run as training
from harness.train.inputs import AUGMENTS
from harness.train.plan import plan_for, trained_checkpoint, write_record
from harness.train.timing import summarize
from harness.vocab import DEVICE_NAMES, PRECISIONS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecipeSpec(_Strict):
    """A document's training recipe (its 脚本参数 section)."""

    optimizer: Literal[tc.OPTIMIZERS]
    momentum: float = Field(0.9, ge=0, lt=1)
    rmsprop_decay: float = Field(0.9, gt=0, lt=1)
    eps: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_schedule: Literal[tc.SCHEDULES]
    lr_init: float = Field(0.0, ge=0)
    lr_max: float = Field(..., ge=0)
    lr_end: float = Field(0.0, ge=0)
    epochs: int = Field(..., gt=0)
    warmup_epochs: float = Field(0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    loss_scale: float = Field(1.0, gt=0)
    dynamic_loss_scale: bool = False
    amp_level: Literal[tc.AMP_LEVELS] = "O2"
    # the document's per-device batch and device count (the LR's linear scaling rule starts here)
    batch_size: int = Field(..., gt=0)
    num_devices: int = Field(1, gt=0)
    augment: Literal[tuple(AUGMENTS)] = "random_resized_crop_flip"


class LearnsSpec(_Strict):
    steps: int = Field(6, ge=2)
    lr: float = Field(0.01, ge=0)
    min_drop: float = Field(0.2, gt=0, lt=1)


class DataSpec(_Strict):
    # generated: class-dependent colour and stripes (learnable labels), no files needed;
    # imagefolder | flat: the training split's own labelled images (path, label_file, as dataset: takes);
    # dataset: drawn from the suite's dataset: section, the images accuracy scores (overlaps by definition)
    kind: Literal["generated", "imagefolder", "flat", "dataset"] = "generated"
    path: str | None = None
    label_file: str | None = None
    # how many images (drawn with `seed`); None: 32 generated, or every image of the folder
    images: int | None = Field(None, gt=0)
    classes: int = Field(10, gt=1)  # generated only
    seed: int = 0
    # training images that are also accuracy's evaluation images: refused unless allowed, and then
    # every accuracy result says trained_on_eval and is never held against a baseline
    allow_overlap: bool = False

    def model_post_init(self, _):
        if self.kind in ("imagefolder", "flat") and not self.path:
            raise ValueError(f"train.data.kind {self.kind} needs train.data.path (the training split's folder)")
        if self.kind == "flat" and not self.label_file:
            raise ValueError("train.data.kind flat needs train.data.label_file")


class TrainTarget(_Strict):
    name: str
    device: Literal[DEVICE_NAMES]
    framework: Literal[tc.FRAMEWORKS]
    precision: Literal[PRECISIONS] = "fp32"
    batch_sizes: list[int] = Field(..., min_length=1)
    num_devices: int = Field(1, gt=0)
    image_size: int | None = Field(None, gt=0)  # None: the suite's input size
    steps: int = Field(10, gt=0)  # the budget in steps ...
    seconds: float | None = Field(None, gt=0)  # ... or in seconds, whichever ends first
    warmup_steps: int = Field(2, ge=0)
    lr_scale: float | Literal["auto"] = "auto"
    # reduced resolution/batch for this host: labelled as such, never held against a document
    reduced: bool = False
    threads: int | None = Field(None, gt=0)  # per process; default: the host's cores / num_devices
    # start even 1 process through the framework's launcher (a like-for-like 1-process figure for scaling)
    launcher: bool = False
    # torch only: the network and batches in NHWC layout; torch.compile (true or a mode) of the network
    channels_last: bool = False
    compile: bool | Literal["default", "reduce-overhead", "max-autotune"] = False

    def model_post_init(self, _):
        if any(b <= 0 for b in self.batch_sizes):
            raise ValueError("batch_sizes must be positive")
        if (self.channels_last or self.compile) and self.framework != "torch":
            raise ValueError("channels_last and compile apply to framework: torch only")


class TrainSpec(_Strict):
    recipe: RecipeSpec
    learns: LearnsSpec = Field(default_factory=LearnsSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    # "train or load": the name of a 1-device train target whose checkpoint (cached by its
    # recipe identity) becomes the network of export, parity, accuracy and throughput
    feeds: str | None = None
    targets: list[TrainTarget] = Field(default_factory=list)


@dataclass
class TrainCase(Case):
    train_target: TrainTarget | None = None

    @property
    def name(self) -> str:
        return f"train[{self.train_target.name}-bs{self.batch_size}]"


class TrainStage(Stage):
    name = "train"
    schema = TrainSpec

    def cases(self, suite):
        cfg = suite.stage_config.get("train")
        for t in (cfg.targets if cfg else ()):
            for b in t.batch_sizes:
                # the fed checkpoint's own run goes first: export and the rest then load what it saved
                fed = cfg.feeds == t.name and b == t.batch_sizes[0]
                yield TrainCase(suite, "train", t.device, None, b, None, [t.device, "train"], first=fed,
                                train_target=t)

    def weights(self, suite, cache_root):
        """Train or load: the checkpoint of the ``train.feeds`` target (see harness.train.plan)."""
        return trained_checkpoint(suite, cache_root)

    def run(self, case, ctx, res):
        t, suite = case.train_target, case.suite
        cfg = suite.stage_config["train"]
        res.target, res.runner, res.precision, res.timing_scope = t.name, t.framework, t.precision, "host"
        need = {"mindspore": need_mindspore, "torch": need_torch}.get(t.framework)
        if need is not None:  # an absent framework is a skip naming the extra, not a ModuleNotFoundError
            need(f"training with {t.framework}")
        plan = plan_for(suite, cfg, t, case.batch_size, ctx.models.cache.root)
        res.artifact_sha256 = plan["identity"]  # the result's identity carries the recipe
        res.metrics.update(train_recipe=plan["recipe"], train_target={
            "framework": t.framework, "num_devices": t.num_devices, "image_size": plan["image_size"],
            "steps": t.steps, "seconds": t.seconds, "lr_scale": plan["lr_scale"], "reduced": t.reduced,
            "augment": AUGMENTS[plan["augment"]].identity, "data": plan["data"],
            "channels_last": t.channels_last, "compile": t.compile}, learns_config=plan["learns"])
        if cfg.feeds == t.name:
            if Path(plan["checkpoint_cache"]).is_file():  # never replaced under the artifacts made from it
                res.metrics["checkpoint"] = plan["checkpoint_cache"]
            else:
                plan["checkpoint"] = plan["checkpoint_cache"]
        try:
            # a 1-device target runs in a child process too: the framework's memory leaves with it
            out = launchers.launch(plan) if t.num_devices > 1 or t.launcher else launchers.isolated(plan)
        except (CaseSkipped, UserError):
            raise
        except Exception as exc:
            if tc.is_out_of_memory(exc):
                res.metrics["out_of_memory"] = True
                raise CaseFailed(f"out of memory at batch {case.batch_size}: {str(exc)[:300]}") from None
            raise
        if plan.get("checkpoint") and out.get("checkpoint") and "nonfinite" not in out:
            write_record(plan, t.name, out)  # how the fed checkpoint was trained, for accuracy's provenance
        self._record(case, ctx, res, plan, out)

    def _record(self, case, ctx, res, plan, out):
        t = case.train_target
        m = res.metrics
        m.update(train_api=out.get("api"), loss_curve=out["losses"], lr_curve=out["lrs"],
                 learns_curve=out.get("learns_losses", []), step_s=out["step_s"])
        if out.get("launch_command"):
            m["launch_command"] = out["launch_command"]
        if out.get("time_to_first_step_s") is not None:
            m["train_first_step_s"] = out["time_to_first_step_s"]
        m["train_peak_host_mb"] = out["peak_host_mb"]
        if out.get("device_memory_mb") is not None:
            m["train_peak_device_mb"] = out["device_memory_mb"]
        if out.get("checkpoint"):
            m["checkpoint"] = out["checkpoint"]
        if "nonfinite" in out:
            nf = out["nonfinite"]
            m["nonfinite_loss"] = nf
            raise CaseFailed(f"loss became {nf['loss']} at step {nf['step']} of the {nf['phase']} phase; stopped "
                             f"there. Lower train.recipe.lr_max (or the target's lr_scale) or raise loss_scale")
        stats = summarize(out["step_s"], warmup=t.warmup_steps, images_per_step=case.batch_size * t.num_devices)
        m.update(stats)
        if out["losses"]:
            m["train_loss"] = out["losses"][-1]
        ok, drop, why = tc.learns(m["learns_curve"], plan["learns"]["min_drop"])
        m["train_learns_drop"] = drop if math.isfinite(drop) else None
        label = "reduced resolution/batch, " if t.reduced else ""
        opts = [o for o, on in (("channels_last", t.channels_last), (f"compile={t.compile}", t.compile)) if on]
        label += f"{', '.join(opts)}, " if opts else ""
        step = (f"{stats['train_step_ms']:.1f} ms/step, {stats['train_images_per_s']:.1f} img/s"
                if "train_step_ms" in stats else stats.get("steady_note", "no step timed"))
        res.reason = (f"{label}{t.framework} x{t.num_devices}, {plan['image_size']}px: {step}; {why}")
        if not ok:
            raise CaseFailed(f"learns check failed: {why}")
        if "train_step_ms" in stats:
            self._hold(case, ctx, res, stats["train_step_ms"])

    def _hold(self, case, ctx, res, value):
        """Documented step times, held only when device (and the device model a document names),
        per-device batch, devices and precision match."""
        t = case.train_target
        if ctx.baselines is None:
            return
        docs = select(ctx.baselines, model=case.suite.model, metric="train_step_ms", device=case.device)
        if t.reduced or not docs:
            why = "reduced resolution/batch for this host" if t.reduced else f"none for {case.device}"
            res.metrics["baseline_note"] = f"no documented figure: {why}"
            return
        # the documents train in mixed precision (their 混合精度 section) where a figure names none
        fit = [b for b in docs if b.batch_size == case.batch_size and b.num_devices == t.num_devices
               and (b.precision or "mixed") == t.precision and (b.epoch or 2) > 1
               and device_model_matches(b.device_model, res.metrics.get("device_model"))]
        if not fit:
            seen = "; ".join(sorted({f"batch {b.batch_size} x {b.num_devices or '?'} devices, {b.precision or 'mixed'}"
                                     for b in docs}))
            res.metrics["baseline_note"] = (f"no documented figure: the documents time {seen}; this run is batch "
                                            f"{case.batch_size} x {t.num_devices} devices, {t.precision}")
            return
        ctx.record(res, [hold(value, b, timing_scope=res.timing_scope) for b in fit])
