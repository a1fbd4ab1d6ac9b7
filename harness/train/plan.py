"""The train stage's plan: a suite's ``train:`` target resolved into the plain
dict that :func:`harness.train.run.run` (or a launcher's worker) takes,
with its identity; and "train or load", the trained checkpoint that feeds the
suite's other stages (cached by that identity).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from harness.config.suite import DatasetSpec
from harness.data import datasets
from harness.data.recipes import get_recipe
from harness.errors import UserError
from harness.fsio import atomic_path
from harness.train import common as tc
from harness.train import run as training
from harness.models.cards import reference_of
from harness.train.inputs import AUGMENTS
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
    if cfg.data.kind != "generated":
        files = training_files(suite, cfg.data)
        plan["data"]["files"] = [[str(p), label] for p, label in files]
        plan["data"]["sha256"] = data_digest(files)
    # the identity names the training images by content (their digest), not by where they lie
    plan["identity"] = tc.identity({k: v for k, v in plan.items() if k not in ("threads", "budget_s", "data")}
                                   | {"data": {k: v for k, v in plan["data"].items() if k not in ("files", "path", "label_file")}}
                                   | {"augment": AUGMENTS[recipe["augment"]].identity,
                                      "source_checkpoint": src.checkpoint, "init": "framework"})
    suffix = ".ckpt" if target.framework == "mindspore" else ".pth"
    plan["checkpoint_cache"] = str(tc.checkpoint_path(cache_root, plan["identity"], suffix))
    return plan


def _fed_plan(suite, cache_root) -> dict | None:
    """The plan of the suite's ``train.feeds`` target; None when it names none."""
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
    return plan_for(suite, cfg, target, target.batch_sizes[0], cache_root)


def _record_path(ckpt: Path) -> Path:
    return ckpt.with_name("trained.json")


def trained_checkpoint(suite, cache_root) -> Path | None:
    """Train or load: the checkpoint of the suite's ``train.feeds`` target,
    trained now unless the cache holds one of the same identity (recipe,
    network, steps, training data digest; a change is a new identity, so it
    retrains). Beside it, ``trained.json`` records how it was trained. None
    when the suite does not ask for it."""
    plan = _fed_plan(suite, cache_root)
    if plan is None:
        return None
    check_overlap(suite)  # also when no validate_suite ran first: never trains what accuracy would score
    path = Path(plan["checkpoint_cache"])
    record = trained_record(suite, cache_root, plan)
    if not path.is_file() or record is None:
        plan["checkpoint"] = str(path)
        out = training.run(plan)
        if "nonfinite" in out or "checkpoint" not in out:
            raise UserError(f"training {suite.stage_config['train'].feeds!r} for train.feeds produced no checkpoint "
                            f"({out.get('nonfinite')})", path=suite.path, fix="fix the recipe, then run again")
        write_record(plan, suite.stage_config["train"].feeds, out)
    return path


def write_record(plan: dict, target: str, out: dict) -> None:
    """``trained.json`` beside a trained checkpoint: its identity, recipe, steps,
    training data digest and final loss (what reports say of trained weights)."""
    path, losses = Path(out["checkpoint"]), out["losses"]
    record = {"identity": plan["identity"], "target": target, "framework": plan["framework"], "arch": plan["arch"],
              "recipe": plan["recipe"], "steps": len(losses), "batch_size": plan["batch_size"],
              "image_size": plan["image_size"], "augment": plan["augment"],
              "train_data": {k: v for k, v in plan["data"].items() if k != "files"},
              "train_images": len(plan["data"].get("files") or []) or plan["data"].get("images") or 32,
              "final_loss": losses[-1] if losses else None, "loss_curve": losses,
              "checkpoint_sha256": file_sha256(path)}
    with atomic_path(_record_path(path)) as tmp:
        tmp.write_text(json.dumps(record, indent=1))


def trained_record(suite, cache_root, plan: dict | None = None) -> dict | None:
    """How the fed checkpoint was trained (``trained.json``), when the cache
    holds it for this very identity; else None."""
    plan = plan or _fed_plan(suite, cache_root)
    if plan is None:
        return None
    rec = _record_path(Path(plan["checkpoint_cache"]))
    try:
        out = json.loads(rec.read_text())
    except (OSError, ValueError):
        return None
    return out if out.get("identity") == plan["identity"] else None


def training_files(suite, data) -> list[tuple[Path, int]]:
    """(path, label) of the training images ``train.data`` names: its own folder
    (kind imagefolder/flat) or the suite's dataset (kind dataset); ``data.images``
    of them drawn with ``data.seed`` when given, else all."""
    if data.kind == "dataset":
        if suite.dataset.kind == "synthetic":
            raise UserError("train.data.kind dataset needs labelled images, but dataset.kind is synthetic",
                            path=suite.path, fix="set train.data.kind: imagefolder and train.data.path (the "
                                                 "training split's class folders), or train.data.kind: generated")
        spec = suite.dataset
    else:
        spec = DatasetSpec(kind=data.kind, path=data.path, label_file=data.label_file)
    try:
        ds = datasets.from_spec(spec, suite.resolve, num_classes=suite.source.num_classes)
    except UserError as exc:
        if data.kind == "dataset":
            raise
        raise UserError(f"train.data: {exc.message}", path=exc.path or suite.path,
                        fix="set train.data.path (and label_file) in the suite to the training split's images; "
                            "make them first where the suite says how (examples/digits: make_digits.py)") from None
    picked = sorted(ds.samples, key=lambda s: str(s.path))
    if data.images is not None:
        random.Random(data.seed).shuffle(picked)
        picked = picked[:data.images]
    return [(Path(s.path), int(s.label)) for s in picked]


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def data_digest(files: list[tuple[Path, int]]) -> str:
    """sha256 of the training set: each image's content digest and label, in a fixed order."""
    pairs = sorted(f"{file_sha256(p)} {label}" for p, label in files)
    return hashlib.sha256("\n".join(pairs).encode()).hexdigest()


def check_overlap(suite) -> list[tuple[str, str]]:
    """Training images of the checkpoint that feeds the suite's stages which are
    also its accuracy images (the same file, or the same content): a UserError
    naming both sets unless ``train.data.allow_overlap``; then the pairs."""
    cfg = (suite.stage_config or {}).get("train")
    if (cfg is None or not cfg.feeds or cfg.data.kind == "generated" or suite.dataset.kind == "synthetic"
            or not any("accuracy" in t.stages for t in suite.targets)):
        return []
    train = training_files(suite, cfg.data)
    evals = [Path(s.path) for s in datasets.from_spec(suite.dataset, suite.resolve,
                                                      num_classes=suite.source.num_classes).samples]
    seen = {p.resolve(): p for p, _ in train}
    pairs = [(str(seen[e.resolve()]), str(e)) for e in evals if e.resolve() in seen]
    # by content: hash only the files whose size occurs on both sides
    named = {b for _, b in pairs}
    rest = [e for e in evals if str(e) not in named]
    eval_sizes = {e.stat().st_size for e in rest}
    digests = {file_sha256(p): p for p, _ in train if p.stat().st_size in eval_sizes}
    train_sizes = {p.stat().st_size for p in digests.values()}
    for e in rest:
        if e.stat().st_size in train_sizes and (hit := digests.get(file_sha256(e))) is not None:
            pairs.append((str(hit), str(e)))
    if pairs and not cfg.data.allow_overlap:
        where = cfg.data.path or f"dataset: ({suite.dataset.path})"
        raise UserError(f"{len(pairs)} training image(s) of train.data ({where}) are also accuracy images of "
                        f"dataset: ({suite.dataset.path}), e.g. {pairs[0][0]} and {pairs[0][1]}: accuracy would "
                        f"be measured on images the network was trained on", path=suite.path,
                        fix="point train.data.path and dataset.path at disjoint splits (train / val), or set "
                            "train.data.allow_overlap: true to have accuracy marked trained_on_eval and never judged")
    return pairs
