"""PyTorch inference on the CPU or an NVIDIA GPU (`runner: torch`, `format: native`).

What it runs is the suite's PyTorch network: for a ``pytorch`` source the
timm model itself, for a ``mindcv`` source the card's timm reference with the
suite's weights converted (:meth:`harness.models.provider.ModelProvider.torch_network`).

Options (target ``options:``), in the terms of timm's own benchmark script:

- precision ``fp32`` | ``fp16`` | ``bf16`` (autocast to that type; ``mixed`` is
  fp16 on a GPU, bf16 on the CPU). fp32 convolutions and matmuls follow
  PyTorch's defaults (``torch.backends.cudnn.allow_tf32`` is on: TF32 tensor
  cores on Ampere and later); ``tf32: false`` turns TF32 off. What was used
  goes into the result (``torch``) and decides which published peak applies.
- ``channels_last: true``: the network and every batch in NHWC memory layout.
- ``compile: true`` (or a mode: ``default``, ``reduce-overhead``,
  ``max-autotune``): ``torch.compile``; compiled once in ``load`` and the
  seconds recorded (``torch.compile_s``).
- ``cuda_graphs: true`` (GPU): the forward pass is captured once into a CUDA
  graph and replayed. With ``compile`` it means ``mode: reduce-overhead``
  (torch.compile's own CUDA graphs) instead.
- ``timing_scope: host`` (GPU): time on the host clock only.
- ``threads`` (CPU): ``torch.set_num_threads``.
- ``cudnn_benchmark`` (GPU, default true): cuDNN autotunes its kernels for the
  batch's fixed shape (timm's benchmark does the same); the warm-up absorbs it.

Timing. On the CPU the scope is ``host``. On a GPU it is ``device``: a pair of
CUDA events brackets the forward pass alone (inputs already on the device,
outputs not yet copied back), the sense of trtexec's "GPU Compute Time". Each
``run`` still copies the batch in and the logits out (the stage needs them), so
the timing engine also keeps the host clock around every run; both go into
the result, each labelled with its scope (``timing_scope`` and ``host_scope``).

torch is imported inside the methods: this module imports on a host without it.
"""

from __future__ import annotations

import copy
import importlib.util
import time

import numpy as np

from harness.errors import UserError
from harness.runners.base import Runner
from harness.vocab import DEVICES, GPU_FAMILIES, HOST_DEVICE

INSTALL = "pip install -e '.[torch]' (torch, torchvision, timm)"
_AUTOCAST = {"fp16": "float16", "bf16": "bfloat16"}
_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _gpu(device: str | None) -> bool:
    return device is not None and device in DEVICES and DEVICES[device].detector == "nvidia-smi"


def autocast_dtype(precision: str, device: str) -> str | None:
    """The autocast type for a target precision (None: plain fp32)."""
    if precision == "mixed":
        return "float16" if _gpu(device) else "bfloat16"
    if precision in ("fp32", None):
        return None
    if precision not in _AUTOCAST:
        raise UserError(f"the torch runner has no {precision} path",
                        fix="use precision fp32, fp16, bf16 or mixed (autocast) for runner: torch")
    return _AUTOCAST[precision]


def compile_mode(options: dict, gpu: bool) -> str | None:
    """torch.compile's mode for the target's options; None: eager."""
    c = options.get("compile", False)
    if c in (False, None, "false", "no"):
        return None
    mode = "default" if c in (True, "true", "yes") else str(c)
    if mode not in _COMPILE_MODES:
        raise UserError(f"options.compile {c!r} is not a torch.compile mode",
                        fix=f"use true or one of {', '.join(_COMPILE_MODES)}")
    if gpu and options.get("cuda_graphs") and mode == "default":
        mode = "reduce-overhead"  # torch.compile's own CUDA graphs
    return mode


def why_no_cuda(torch) -> str | None:
    """Why this torch cannot use a GPU, with the fix; None when it can."""
    if torch.cuda.is_available():
        return None
    if not getattr(torch.version, "cuda", None):
        return (f"this PyTorch build has no CUDA (torch {torch.__version__}): install a CUDA build, e.g. "
                "pip install torch torchvision --index-url https://download.pytorch.org/whl/cu126")
    return (f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU (torch.cuda.is_available() is "
            "False): check the NVIDIA driver and CUDA_VISIBLE_DEVICES")


class TorchRunner(Runner):
    name = "torch"
    formats = ("native",)
    devices = (HOST_DEVICE, *GPU_FAMILIES)
    timing_scope = "host"
    #: the network it loads is PyTorch's (the stages ask the provider for it)
    native_framework = "torch"

    @classmethod
    def unavailable(cls, options: dict | None = None, device: str | None = None) -> str | None:
        for mod in ("torch", "timm"):
            if importlib.util.find_spec(mod) is None:
                return f"{mod} is not installed: {INSTALL}"
        options = options or {}
        if _gpu(device):
            import torch

            why = why_no_cuda(torch)
            if why:
                return why
            if compile_mode(options, True) and importlib.util.find_spec("triton") is None:
                return "torch.compile on a GPU needs Triton, which is not installed: pip install triton"
        return None

    def __init__(self, device, device_id=0, precision="fp32", options=None):
        super().__init__(device, device_id, precision, options)
        self.gpu = _gpu(device)
        if self.gpu and self.options.get("timing_scope", "device") == "device":
            self.timing_scope = "device"
        self._pairs: list = []  # CUDA (start, end) events not yet read
        self._device_ms: list[float] = []
        self._info: dict = {}

    # -- load ----------------------------------------------------------------------------
    def load(self, artifact, input_shape):
        import torch

        self.torch = torch
        if not isinstance(artifact, torch.nn.Module):
            raise UserError(f"the torch runner loads a PyTorch network, not {type(artifact).__name__}",
                            fix="use format: native with runner: torch")
        opts = self.options
        dtype_name = autocast_dtype(self.precision, self.device)
        self.amp_dtype = getattr(torch, dtype_name) if dtype_name else None
        mode = compile_mode(opts, self.gpu)
        self.channels_last = bool(opts.get("channels_last", False))
        self.graphs = bool(opts.get("cuda_graphs", False)) and self.gpu and mode is None
        if self.gpu:
            self.dev = torch.device("cuda", int(self.device_id))
            torch.cuda.set_device(self.dev)
            # cuDNN picks its fastest kernels for this fixed shape, as timm's benchmark.py does
            torch.backends.cudnn.benchmark = bool(opts.get("cudnn_benchmark", True))
            if "tf32" in opts:
                torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = bool(opts["tf32"])
        else:
            self.dev = torch.empty(0).device  # the host
            if opts.get("threads"):
                torch.set_num_threads(int(opts["threads"]))
        # a copy: the provider's network stays the fp32 CPU reference other cases use
        model = copy.deepcopy(artifact).eval().to(self.dev)
        self.fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.forward = torch.compile(model, mode=mode) if mode else model
        self.static_in = torch.zeros(input_shape, device=self.dev).contiguous(memory_format=self.fmt)
        t0 = time.perf_counter()
        if mode or self.graphs:
            self._warm(3)
        if self.graphs:
            self._capture()
        self._info = {
            "precision": self.precision, "autocast": dtype_name or "off", "channels_last": self.channels_last,
            "compile": mode or False, "cuda_graphs": self.graphs or (mode == "reduce-overhead"),
            "timing_scope": self.timing_scope, "device": str(self.dev), "threads": torch.get_num_threads(),
        }
        if mode or self.graphs:
            self._info["compile_s" if mode else "capture_s"] = round(time.perf_counter() - t0, 3)
        if self.gpu:
            tf32 = bool(torch.backends.cudnn.allow_tf32)
            self._info.update(tf32_convolutions=tf32, tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32),
                              gpu_name=torch.cuda.get_device_name(self.dev), cuda=torch.version.cuda,
                              cudnn=torch.backends.cudnn.version(),
                              cudnn_benchmark=bool(torch.backends.cudnn.benchmark))

    def _autocast(self):
        # no cast cache under CUDA graphs: the graph must hold every cast it replays
        return self.torch.autocast(device_type=self.dev.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None,
                                   cache_enabled=not self.graphs)

    def _forward(self):
        with self.torch.inference_mode(), self._autocast():
            return self.forward(self.static_in)

    def _warm(self, n: int) -> None:
        torch = self.torch
        if self.gpu:  # on a side stream, as CUDA graph capture asks
            s = torch.cuda.Stream(self.dev)
            s.wait_stream(torch.cuda.current_stream(self.dev))
            with torch.cuda.stream(s):
                for _ in range(n):
                    self._forward()
            torch.cuda.current_stream(self.dev).wait_stream(s)
            torch.cuda.synchronize(self.dev)
        else:
            for _ in range(n):
                self._forward()

    def _capture(self) -> None:
        torch = self.torch
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_out = self._forward()
        torch.cuda.synchronize(self.dev)

    # -- run ------------------------------------------------------------------------------
    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if tuple(x.shape) != tuple(self.static_in.shape):
            raise UserError(f"batch of shape {tuple(x.shape)} for a runner loaded for {tuple(self.static_in.shape)}")
        if not self.gpu:
            self.static_in = x.contiguous(memory_format=self.fmt) if self.channels_last else x
            return self._forward().float().numpy()
        self.static_in.copy_(x)  # host -> device (and to NHWC when asked), outside the events
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        if self.graphs:
            self.graph.replay()
            out = self.static_out
        else:
            out = self._forward()
        end.record()
        self._pairs.append((start, end))
        return out.float().cpu().numpy()  # device -> host waits for the forward pass

    def synchronize(self) -> None:
        if self.gpu:
            self.torch.cuda.synchronize(self.dev)

    def device_times_ms(self) -> list[float] | None:
        """Each run's forward pass as the GPU timed it (CUDA events), in ms."""
        if not self.gpu:
            return None
        if self._pairs:
            self.synchronize()
            self._device_ms.extend(float(s.elapsed_time(e)) for s, e in self._pairs)
            self._pairs.clear()
        return self._device_ms

    def extra_metrics(self) -> dict:
        out: dict = {"torch": dict(self._info)}
        if self.gpu and self._info:
            out["gpu_model"] = self._info["gpu_name"]
        # the published peak that applies: autocast's type, else TF32 where the GPU uses it for fp32
        kind = {"float16": "fp16", "bfloat16": "bf16"}.get(self._info.get("autocast"), "fp32")
        if kind == "fp32" and self._info.get("tf32_convolutions"):
            kind = "tf32"
        out["peak_precision"] = kind
        return out

    def version(self) -> str:
        import torch

        return torch.__version__

    def close(self) -> None:
        for name in ("graph", "static_out", "forward", "model", "static_in"):
            self.__dict__.pop(name, None)
        self._pairs.clear()
