"""The PyTorch training path (``kind: pytorch``, or a mindcv suite trained
through its card's timm reference): the recipe with torch's optimizer, a
per-step LR the scheduler applies (``LambdaLR`` over the recipe's schedule),
``torch.autocast`` for mixed precision and ``torch.amp.GradScaler`` for the
loss scale. Several processes: ``torchrun`` starts
:mod:`harness.train.worker`, which joins a gloo (CPU) or NCCL (GPU)
process group; the model is then wrapped in ``DistributedDataParallel``.

torch and timm are imported inside the functions.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from harness.errors import UserError
from harness.fsio import atomic_path
from harness.models import torch_net
from harness.train.common import check_optimizer


def _autocast_dtype(device: str) -> str:
    """float16 on CUDA; bfloat16 elsewhere (torch's CPU autocast)."""
    return "float16" if device == "cuda" else "bfloat16"


def check_fits(recipe: dict, device: str, precision: str) -> None:
    check_optimizer(recipe)
    if precision not in ("fp32", "mixed"):
        raise UserError(f"precision {precision} does not fit the PyTorch training path (train.recipe.amp_level "
                        "is MindSpore's)", fix="give the target precision fp32, or mixed for torch.autocast")


def _optimizer(torch, recipe: dict, model):
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    rest = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [g for g in ({"params": decay, "weight_decay": recipe["weight_decay"]},
                          {"params": rest, "weight_decay": 0.0}) if g["params"]]
    if not groups:  # every parameter frozen: an optimizer over nothing still steps
        groups = [{"params": [torch.nn.Parameter(torch.zeros(1), requires_grad=False)]}]
    kind = recipe["optimizer"]
    if kind == "momentum":
        return torch.optim.SGD(groups, lr=1.0, momentum=recipe["momentum"])
    if kind == "rmsprop":
        # RMSProp as MindSpore (and TensorFlow) run it: the mean square starts at ones, not zeros,
        # so the first steps are not huge (alpha = decay; torch adds eps outside the sqrt)
        opt = torch.optim.RMSprop(groups, lr=1.0, alpha=recipe["rmsprop_decay"], eps=recipe["eps"],
                                  momentum=recipe["momentum"])
        for g in opt.param_groups:
            for p in g["params"]:
                opt.state[p] = {"step": torch.tensor(0.0), "square_avg": torch.ones_like(p),
                                "momentum_buffer": torch.zeros_like(p)}
        return opt
    return torch.optim.SGD(groups, lr=1.0)


class TorchTrainer:
    framework = "torch"
    suffix = ".pth"

    def __init__(self, plan: dict, model=None):
        torch, _ = torch_net._need_torch()
        self.torch = torch
        recipe = plan["recipe"]
        # torch's device type: CUDA for the GPU family, else torch's default (the host)
        self.device = "cuda" if plan["device_target"] == "GPU" else torch.empty(0).device.type
        check_fits(recipe, self.device, plan["precision"])
        if plan.get("threads"):
            torch.set_num_threads(int(plan["threads"]))
        if model is None:
            model = torch_net.build_model(plan["arch"], plan["num_classes"], None, seed=plan["seed"])
        self.model = model.to(self.device).train()
        if plan.get("freeze"):
            for p in self.model.parameters():
                p.requires_grad_(False)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        # timm's train.py options: NHWC layout (network and batches) before DDP wraps it
        self.memory_format = torch.channels_last if plan.get("channels_last") else torch.contiguous_format
        if plan.get("channels_last"):
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ddp = self.model
        if self.world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model)
        # ... and torch.compile of the (wrapped) network
        if plan.get("compile"):
            mode = None if plan["compile"] is True else plan["compile"]
            self.ddp = torch.compile(self.ddp, mode=mode)
        self.opt = _optimizer(torch, recipe, self.model)
        # the scheduler applies the LR: LambdaLR multiplies the base lr (1.0) by the value the loop asks for
        self._next_lr = 0.0
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda _: self._next_lr)
        self.loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=recipe["label_smoothing"])
        self.autocast = plan["precision"] == "mixed"
        scale = float(recipe["loss_scale"])
        growth = 2000 if recipe.get("dynamic_loss_scale") else 2**31 - 1  # fixed scale: never grows
        self.scaler = torch.amp.GradScaler(self.device, init_scale=scale, growth_interval=growth)
        self.api = (f"torch.optim.{type(self.opt).__name__} + LambdaLR, GradScaler(init_scale={scale:g})"
                    + (f", autocast({_autocast_dtype(self.device)})" if self.autocast else "")
                    + (f", DistributedDataParallel x{self.world}" if self.world > 1 else "")
                    + (", channels_last" if plan.get("channels_last") else "")
                    + (f", torch.compile({plan['compile']})" if plan.get("compile") else ""))

    def step(self, x: np.ndarray, y: np.ndarray, lr: float):
        torch = self.torch
        self._next_lr = lr
        with warnings.catch_warnings():  # stepped first on purpose: this step's update uses this lr
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
            self.sched.step()
        applied = self.opt.param_groups[0]["lr"]
        xt = torch.from_numpy(x).to(self.device).contiguous(memory_format=self.memory_format)
        yt = torch.from_numpy(y.astype(np.int64)).to(self.device)
        self.opt.zero_grad(set_to_none=True)
        dtype = getattr(torch, _autocast_dtype(self.device))
        with torch.autocast(self.device, dtype=dtype, enabled=self.autocast):
            loss = self.loss_fn(self.ddp(xt).float(), yt)
        if loss.requires_grad:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        if self.device == "cuda":
            torch.cuda.synchronize()
        return float(loss.detach()), float(applied)

    def device_memory_mb(self) -> float | None:
        if self.device == "cuda":
            return self.torch.cuda.max_memory_allocated() / 1e6
        return None

    def save(self, dest: Path) -> Path:
        """A torch state dict (the network only), written atomically."""
        self.model.eval()
        with atomic_path(dest) as tmp:
            try:
                self.torch.save(self.model.state_dict(), tmp)
            except (OSError, RuntimeError) as exc:
                raise UserError(f"cannot write the trained checkpoint: {exc}", path=dest,
                                fix="free disk space or fix the cache folder's permissions") from None
        return dest

