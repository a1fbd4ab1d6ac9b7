"""Training data apart from evaluation data (issue 24): ``train.data`` names
its own labelled images; training images that accuracy would score are refused
before anything runs (exit INPUT, naming both), or, with ``allow_overlap``,
accuracy is marked ``trained_on_eval`` and never held against a baseline; the
identity of trained weights carries the training data's digest, and accuracy
says whether its weights were loaded or trained here."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.errors import ExitCode, UserError
from harness.plan import build_plan, read_suite, validate_suite
from harness.train import plan as train_plan
from tests.conftest import REPO, color_images

pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("onnxruntime")

BASELINES = REPO / "baselines.yaml"

SUITE = """\
schema_version: 1
model: tiny
source: {kind: pytorch, arch: resnet10t, num_classes: 3, opset: 13}
input: {size: 32, preprocess: whole_image_mean127}
export: [onnx]
dataset: {kind: imagefolder, path: EVAL, workers: 0}
accuracy_baselines: [se_resnext50.top1.ascend310.infer_log]
targets:
  - {name: cpu-ort, device: cpu, runner: onnxruntime, format: onnx, batch_sizes: [4], stages: [accuracy]}
train:
  recipe: {optimizer: momentum, lr_schedule: constant, lr_max: 0.01, epochs: 1, batch_size: 4, augment: none}
  learns: {steps: 2, lr: 0.01, min_drop: 0.01}
  data: {kind: imagefolder, path: TRAIN ALLOW}
  feeds: cpu-torch
  targets:
    - {name: cpu-torch, device: cpu, framework: torch, batch_sizes: [4], image_size: 32, steps: 3,
       warmup_steps: 1, threads: 1, reduced: true}
"""


def suite_at(tmp_path, train: Path, evals: Path, allow: bool = False) -> Path:
    p = tmp_path / "s" / "suite.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(SUITE.replace("EVAL", str(evals)).replace("TRAIN", str(train))
                 .replace(" ALLOW", ", allow_overlap: true" if allow else ""))
    return p


def test_a_suite_that_scores_its_training_images_is_refused_at_the_cli(tmp_path):
    from tests.test_bad_input_cli import harness, seen

    color_images(tmp_path / "imgs", per_class=2)
    p = suite_at(tmp_path, tmp_path / "imgs", tmp_path / "imgs")
    out = harness("run", p.parent, "--store", tmp_path / "r.sqlite", "--cache", tmp_path / "c", cwd=tmp_path)
    text = seen(out)
    assert out.returncode == ExitCode.INPUT, text
    assert "Traceback" not in text and "allow_overlap" in text
    assert str(tmp_path / "imgs" / "0_red") in text  # names the images on both sides
    assert "train.data" in text and "dataset:" in text
    assert not (tmp_path / "c" / "trained").exists()  # refused before anything trained


def test_the_same_content_under_another_name_is_overlap_too(tmp_path):
    color_images(tmp_path / "train", per_class=3, seed=0)
    color_images(tmp_path / "val", per_class=3, seed=1)
    p = suite_at(tmp_path, tmp_path / "train", tmp_path / "val")
    validate_suite(read_suite(p))  # disjoint: accepted
    shutil.copy(tmp_path / "val/1_green/img_2.png", tmp_path / "train/1_green/copied.png")
    with pytest.raises(UserError) as err:
        validate_suite(read_suite(p))
    assert "copied.png" in err.value.message and "img_2.png" in err.value.message


def test_identity_follows_the_training_content_not_its_location(tmp_path):
    color_images(tmp_path / "train", per_class=3, seed=0)
    color_images(tmp_path / "val", per_class=3, seed=1)
    suite = read_suite(suite_at(tmp_path, tmp_path / "train", tmp_path / "val"))
    plan = train_plan._fed_plan(suite, tmp_path / "c")
    assert plan["data"]["sha256"] == train_plan.data_digest([(Path(f), lab) for f, lab in plan["data"]["files"]])
    shutil.copytree(tmp_path / "train", tmp_path / "moved")
    moved = read_suite(suite_at(tmp_path, tmp_path / "moved", tmp_path / "val"))
    assert train_plan._fed_plan(moved, tmp_path / "c")["identity"] == plan["identity"]
    shutil.copy(tmp_path / "val/0_red/img_0.png", tmp_path / "moved/0_red/img_0.png")  # one image changed
    changed = train_plan._fed_plan(read_suite(suite_at(tmp_path, tmp_path / "moved", tmp_path / "val")),
                                   tmp_path / "c")
    assert changed["data"]["sha256"] != plan["data"]["sha256"] and changed["identity"] != plan["identity"]


def accuracy(tmp_path, suite_path, cache):
    from harness.session import HarnessSession

    suite = read_suite(suite_path)
    validate_suite(suite)
    s = HarnessSession(store=tmp_path / "r.sqlite", cache=cache, baselines=BASELINES)
    [case] = [c for c in build_plan(suite) if c.stage == "accuracy"]
    return s.execute(case)


def test_trained_weights_are_scored_visibly_and_overlap_is_never_judged(tmp_path, monkeypatch):
    color_images(tmp_path / "train", per_class=3, seed=0)
    color_images(tmp_path / "val", per_class=3, seed=1)
    r = accuracy(tmp_path, suite_at(tmp_path, tmp_path / "train", tmp_path / "val"), tmp_path / "c")
    assert r.status == "passed", r.reason
    trained = r.metrics["weights_origin"]["trained"]
    assert trained["steps"] == 3 and trained["train_images"] == 9 and trained["final_loss"] > 0
    assert trained["recipe"]["optimizer"] == "momentum" and len(r.metrics["loss_curve"]) == 3
    assert r.metrics["train_data_sha256"] == trained["train_data_sha256"] and len(trained["train_data_sha256"]) == 64
    assert "trained here (cpu-torch: 3 steps" in r.reason and "trained_on_eval" not in r.metrics
    assert r.baseline  # a disjoint split is held (here: not comparable, other weights)
    # `harness show` (the terminal table) and the HTML report say it too
    from harness.reports import render_report
    from harness.reports.terminal import render

    shown = " ".join(render([r], terminal=False).split())
    assert "weights trained here (cpu-torch: 3 steps, 9 images, data sha256 " in shown
    assert f"final loss {trained['final_loss']:.4f}" in shown
    assert "weights trained here (cpu-torch: 3 steps, 9 images" in render_report(tmp_path / "r.sqlite")
    # the cached checkpoint is reused for the same identity: nothing trains again
    from harness.train import run as training

    monkeypatch.setattr(training, "run", lambda plan: pytest.fail("retrained a cached checkpoint"))
    again = accuracy(tmp_path, suite_at(tmp_path, tmp_path / "train", tmp_path / "val"), tmp_path / "c")
    assert again.metrics["weights_origin"] == r.metrics["weights_origin"]
    monkeypatch.undo()
    # overlap allowed: scored, marked, never held against a baseline
    r = accuracy(tmp_path, suite_at(tmp_path, tmp_path / "val", tmp_path / "val", allow=True), tmp_path / "c2")
    assert r.status == "passed", r.reason
    assert r.metrics["trained_on_eval"] is True and r.baseline is None and "trained_on_eval" in r.reason


def test_loaded_weights_name_their_checkpoint_digest(tmp_path):
    import hashlib

    import torch

    from harness.models.torch_net import build_model

    color_images(tmp_path / "val", per_class=2, seed=1)
    ckpt = tmp_path / "w.pth"
    torch.save(build_model("resnet10t", 3, None, seed=0).state_dict(), ckpt)
    p = suite_at(tmp_path, tmp_path / "unused", tmp_path / "val")
    text = p.read_text().split("train:")[0].replace("num_classes: 3,", f"num_classes: 3, checkpoint: {ckpt},")
    p.write_text(text)
    r = accuracy(tmp_path, p, tmp_path / "c")
    assert r.status == "passed", r.reason
    assert r.metrics["weights_origin"] == {"loaded": {"checkpoint": str(ckpt),
                                                      "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest()}}
    assert "loaded w.pth" in r.reason


def test_editing_training_code_leaves_cached_exports_valid(tmp_path, monkeypatch):
    """The export cache's code fingerprint covers harness/models (what shapes an
    export); training lives in harness/train, which harness/models never imports."""
    import harness.models
    import harness.train
    from harness.models import cache

    models_dir = Path(harness.models.__file__).parent
    train_dir = Path(harness.train.__file__).parent
    before = cache._code_fingerprint()
    read = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self.resolve()) or real(self))
    assert cache._code_fingerprint() == before
    monkeypatch.undo()
    assert read and all(models_dir.resolve() in p.parents for p in read)  # only harness/models is read
    assert sorted(p.name for p in train_dir.glob("*.py")) == sorted(
        ["__init__.py", "common.py", "inputs.py", "launchers.py", "mindspore_trainer.py", "plan.py", "run.py",
         "timing.py", "torch_trainer.py", "worker.py"])
    assert not any(p.name.startswith("train") or p.name in ("training.py", "launchers.py")
                   for p in models_dir.glob("*.py"))  # harness/models holds no training module
    for p in models_dir.rglob("*.py"):
        text = p.read_text()  # (lint-imports' layers forbid it too)
        assert "from harness.train" not in text and "import harness.train" not in text, p
    # editing a training module: same fingerprint; editing the export path: a new one
    copy = tmp_path / "models"
    shutil.copytree(models_dir, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert cache._code_fingerprint(copy) == before
    (copy / "mindspore_net.py").write_text((copy / "mindspore_net.py").read_text() + "\n# edited\n")
    assert cache._code_fingerprint(copy) != before
