"""The MindSpore training path (mindcv networks), as MindSpore documents it:
GRAPH_MODE, the network with its loss built into a loss-scaled train step by
``mindspore.amp.build_train_network`` (``amp_level`` plus a
``FixedLossScaleManager``/``DynamicLossScaleManager``, the optimizer created
with the same ``loss_scale`` so it divides it out, as the ModelZoo train.py
scripts do), the optimizer and LR from the suite's recipe.

The LR is the optimizer's own ``learning_rate`` Parameter, set before each
step and read back after it: the curve stored is what the compiled step used.
One compiled step serves the learns check and the timed run.

MindSpore is imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.errors import UserError
from harness.fsio import atomic_path
from harness.models import mindspore_net
from harness.train.common import check_optimizer


def check_fits(recipe: dict, device_target: str, precision: str) -> None:
    """A recipe MindSpore cannot run here is a UserError naming the key."""
    check_optimizer(recipe)
    if recipe.get("dynamic_loss_scale") and device_target == "CPU":
        # mindspore.amp.build_train_network refuses it on CPU (no control flow there)
        raise UserError("train.recipe.dynamic_loss_scale: MindSpore's CPU backend supports only a fixed loss "
                        "scale (FixedLossScaleManager(drop_overflow_update=False))",
                        fix="set dynamic_loss_scale: false for CPU targets, or train on GPU/Ascend")
    amp = amp_level(recipe, precision)
    if amp in ("O2", "O3") and device_target == "CPU":
        raise UserError(f"amp_level {amp} (precision {precision}) casts to float16, which MindSpore's CPU kernels "
                        "do not train in", fix="give the CPU target precision: fp32 (amp_level O0)")


def amp_level(recipe: dict, precision: str) -> str:
    if precision == "fp32":
        return "O0"
    return recipe.get("amp_level") or "O2"


def _optimizer(nn, recipe: dict, params, lr0: float):
    decay = [p for p in params if p.ndim > 1]  # conv/dense weights; no decay on BN and bias
    rest = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": recipe["weight_decay"]}, {"params": rest, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    scale = float(recipe["loss_scale"])
    kind = recipe["optimizer"]
    if kind == "momentum":
        return nn.Momentum(groups, lr0, momentum=recipe["momentum"], loss_scale=scale)
    if kind == "rmsprop":
        return nn.RMSProp(groups, lr0, decay=recipe["rmsprop_decay"], momentum=recipe["momentum"],
                          epsilon=recipe["eps"], loss_scale=scale)
    return nn.SGD(groups, lr0, loss_scale=scale)


class MindSporeTrainer:
    """A mindcv network, its optimizer and its compiled loss-scaled train step."""

    framework = "mindspore"

    def __init__(self, plan: dict):
        import mindspore as ms
        from mindspore import nn

        recipe = plan["recipe"]
        check_fits(recipe, plan["device_target"], plan["precision"])
        mindspore_net.set_context(plan["device_target"])
        self.ms = ms
        self.net = mindspore_net.build_network(plan["arch"], plan["num_classes"], seed=plan["seed"])
        self.net.set_train(True)
        params = self.net.trainable_params()
        self.opt = _optimizer(nn, recipe, params, 0.0)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe["label_smoothing"])
        scale = float(recipe["loss_scale"])
        manager = (ms.amp.DynamicLossScaleManager(scale) if recipe.get("dynamic_loss_scale")
                   else ms.amp.FixedLossScaleManager(scale, drop_overflow_update=False))
        self.amp_level = amp_level(recipe, plan["precision"])
        self.step_cell = ms.amp.build_train_network(self.net, self.opt, loss_fn, level=self.amp_level,
                                                    loss_scale_manager=manager)
        self.step_cell.set_train(True)
        self.api = (f"mindspore.amp.build_train_network(level={self.amp_level!r}, "
                    f"loss_scale_manager={type(manager).__name__}({scale:g}))")
        if getattr(self.step_cell, "reducer_flag", False):  # data parallel: gradients all-reduced across ranks
            self.api += f", {type(self.step_cell.grad_reducer).__name__}"

    def step(self, x: np.ndarray, y: np.ndarray, lr: float):
        ms = self.ms
        self.opt.learning_rate.set_data(ms.Tensor(np.float32(lr)))
        out = self.step_cell(ms.Tensor(x), ms.Tensor(y.astype(np.int32)))
        loss = out[0] if isinstance(out, tuple) else out
        return float(loss.asnumpy()), float(self.opt.learning_rate.asnumpy())

    def device_memory_mb(self) -> float | None:
        """Peak device memory MindSpore's runtime reports (GPU/Ascend; None on CPU)."""
        if self.ms.get_context("device_target") == "CPU":
            return None
        try:
            return float(self.ms.runtime.max_memory_allocated()) / 1e6
        except Exception:  # not reported by this MindSpore/backend
            return None

    def save(self, dest: Path) -> Path:
        """A MindSpore .ckpt of the network's parameters (no optimizer state),
        written beside ``dest`` and moved into place: never half-written."""
        self.net.set_train(False)
        with atomic_path(dest) as tmp:
            ckpt = tmp.with_name(tmp.name + ".ckpt")
            try:
                self.ms.save_checkpoint(self.net, str(ckpt))
                ckpt.replace(tmp)
            except (OSError, RuntimeError) as exc:
                ckpt.unlink(missing_ok=True)
                raise UserError(f"cannot write the trained checkpoint: {exc}", path=dest,
                                fix="free disk space or fix the cache folder's permissions") from None
        return dest

    suffix = ".ckpt"



