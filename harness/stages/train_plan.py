"""The train stage's plan: a suite's ``train:`` target resolved into the plain
dict that :func:`harness.models.training.run` (or a launcher's worker) takes,
with its identity; and "train or load", the trained checkpoint that feeds the
suite's other stages (cached by that identity).
"""

from __future__ import annotations

import random
from pathlib import Path

from harness.data import datasets
from harness.data.recipes import get_recipe
from harness.errors import UserError
from harness.models import train_common as tc
from harness.models import training
from harness.models.cards import reference_of
from harness.models.train_inputs import AUGMENTS
from harness.vocab import DEVICES


def plan_for(suite, cfg, target, batch_size: int, cache_root) -> dict:
    """The plain-dict plan for ``target`` of the suite's ``train:`` section
    ``cfg`` (the stage's pydantic model, read by attribute), with its identity."""
    src = suite.source
    if src.kind not in ("mindcv", "pytorch"):
        raise UserError(f"train: source.kind {src.kind!r} has no framework network to train",
                        path=suite.path, fix="train a mindcv or pytorch source")
    if target.framework == "mindspore" and src.kind != "mindcv":
        raise UserError(f"train target {target.name!r}: framework mindspore needs source.kind mindcv",
                        path=suite.path, fix="use framework: torch for a timm source")
    recipe = cfg.recipe.model_dump()
    size = target.image_size or suite.input.size
    eval_recipe = get_recipe(suite.input.preprocess, suite.input.size)
    arch = src.arch
    if target.framework == "torch" and src.kind == "mindcv":
        arch = reference_of(src.arch)  # the card's timm reference of the same network
    plan = {
        "framework": target.framework, "arch": arch, "num_classes": src.num_classes, "seed": src.seed,
        "device_target": DEVICES[target.device].mindspore_target or "CPU", "precision": target.precision,
        "batch_size": batch_size, "num_devices": target.num_devices, "image_size": size,
        "steps": target.steps, "budget_s": target.seconds, "warmup_steps": target.warmup_steps,
        "recipe": recipe, "lr_scale": tc.lr_scale_for(recipe, batch_size, target.num_devices, target.lr_scale),
        "learns": cfg.learns.model_dump(), "data": cfg.data.model_dump(), "augment": recipe["augment"],
        "mean": list(eval_recipe.mean), "std": list(eval_recipe.std), "threads": target.threads or tc.threads_per_process(target.num_devices),
    }
    # execution options: in the identity only when set (checkpoints trained without them keep theirs)
    plan.update({k: v for k, v in (("channels_last", target.channels_last), ("compile", target.compile)) if v})
    if cfg.data.kind == "dataset":
        plan["data"]["files"] = _dataset_files(suite, cfg.data)
    plan["identity"] = tc.identity({k: v for k, v in plan.items() if k not in ("threads", "budget_s")}
                                   | {"augment": AUGMENTS[recipe["augment"]].identity,
                                      "source_checkpoint": src.checkpoint, "init": "framework"})
    suffix = ".ckpt" if target.framework == "mindspore" else ".pth"
    plan["checkpoint_cache"] = str(tc.checkpoint_path(cache_root, plan["identity"], suffix))
    return plan


def trained_checkpoint(suite, cache_root) -> Path | None:
    """Train or load: the checkpoint of the suite's ``train.feeds`` target,
    trained now if the cache has none for its recipe identity (a changed
    recipe is a new identity, so it retrains). None when the suite does not
    ask for it."""
    cfg = (suite.stage_config or {}).get("train")
    if cfg is None or not cfg.feeds:
        return None
    target = next((t for t in cfg.targets if t.name == cfg.feeds), None)
    if target is None:
        raise UserError(f"train.feeds names no train target {cfg.feeds!r}", path=suite.path,
                        fix=f"use one of: {', '.join(t.name for t in cfg.targets)}")
    want = "mindspore" if suite.source.kind == "mindcv" else "torch"
    if target.framework != want or target.num_devices != 1:
        raise UserError(f"train.feeds: target {target.name!r} ({target.framework}, {target.num_devices} devices) "
                        f"cannot feed a {suite.source.kind} source", path=suite.path,
                        fix=f"name a 1-device {want} train target")
    plan = plan_for(suite, cfg, target, target.batch_sizes[0], cache_root)
    path = Path(plan["checkpoint_cache"])
    if not path.is_file():
        plan["checkpoint"] = str(path)
        out = training.run(plan)
        if "nonfinite" in out or "checkpoint" not in out:
            raise UserError(f"training {target.name!r} for train.feeds produced no checkpoint "
                            f"({out.get('nonfinite')})", path=suite.path, fix="fix the recipe, then run again")
    return path


def _dataset_files(suite, data) -> list[list]:
    """[path, label] of ``data.images`` images drawn with ``data.seed`` from the suite's dataset."""

    if suite.dataset.kind == "synthetic":
        raise UserError("train.data.kind dataset needs labelled images, but dataset.kind is synthetic",
                        path=suite.path, fix="set dataset.kind: imagefolder and dataset.path (ImageNet train "
                                             "class folders), or train.data.kind: generated")
    ds = datasets.from_spec(suite.dataset, suite.resolve, num_classes=suite.source.num_classes)
    picked = list(ds.samples)
    random.Random(data.seed).shuffle(picked)
    return [[str(s.path), int(s.label)] for s in picked[:data.images]]
