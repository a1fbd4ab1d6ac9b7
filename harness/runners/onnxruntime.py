"""ONNX Runtime on CPU, and on GPU (CUDA, TensorRT) or Ascend (CANN) through
their execution providers.

Providers are chosen per target: `options.providers` in the suite (a list,
best first), else the device family's default below. ONNX Runtime silently
falls back to the CPU when an accelerator's provider fails to load (a
missing CUDA or CANN library); the runner refuses that instead, so a "GPU"
figure is never a CPU one. Per-provider settings go in
`options.provider_options: {ProviderName: {key: value}}`; precision fp16
turns on TensorRT's fp16 mode and CANN's `precision_mode`.

Timing scope stays "host" on every device, GPU included. Device-scope ORT
timing (CUDA events around `run_with_iobinding` with inputs and outputs bound
on the GPU) was considered for issue 14 and not done: ONNX Runtime's Python
API exposes no CUDA events or stream, so the events would have to come from
another CUDA binding (cupy, torch) on a stream ORT does not use unless told
(`user_compute_stream`), and without a GPU here it could not be checked that
the events bracket ORT's kernels and nothing else. GPU figures comparable
with ais_bench come from the trtexec runner.
"""

from __future__ import annotations

from harness.errors import UserError
from harness.runners.base import Runner
from harness.vocab import DEVICE_FAMILIES, DEVICES

# Preferred providers per device family, best first. A target may name its
# own list in options.providers.
PROVIDERS = {d.name: list(d.onnxruntime_providers) for d in DEVICE_FAMILIES if d.onnxruntime_providers}
PROVIDER_PACKAGE = {
    "CUDAExecutionProvider": "onnxruntime-gpu",
    "TensorrtExecutionProvider": "onnxruntime-gpu",
    "CANNExecutionProvider": "onnxruntime-cann",
}


KNOWN_PROVIDERS = ("CPUExecutionProvider", *PROVIDER_PACKAGE)


def provider_options_for(provider: str, device_id: int, precision: str, extra: dict | None = None) -> dict:
    """Options one provider is created with."""
    if provider == "CPUExecutionProvider":
        opts: dict = {}
    else:
        opts = {"device_id": str(device_id)}
    if precision == "fp16":
        if provider == "TensorrtExecutionProvider":
            opts["trt_fp16_enable"] = "True"
        elif provider == "CANNExecutionProvider":
            opts["precision_mode"] = "force_fp16"
    opts.update({k: str(v) for k, v in (extra or {}).items()})
    return opts


def choose_providers(device: str, wanted: list[str] | None, available: list[str]) -> list[str]:
    """The providers to ask for, best first, or a UserError naming the package."""
    wanted = list(wanted or PROVIDERS[device])
    unknown = [p for p in wanted if p not in KNOWN_PROVIDERS]
    if unknown:
        raise UserError(f"unknown ONNX Runtime provider(s) {unknown}",
                        fix=f"use some of: {', '.join(KNOWN_PROVIDERS)}")
    chosen = [p for p in wanted if p in available]
    if not chosen:
        pkgs = sorted({PROVIDER_PACKAGE.get(p, "onnxruntime") for p in wanted})
        raise UserError(
            f"ONNX Runtime has none of {wanted} for device {device!r} (available: {available})",
            fix=f"install {' or '.join(pkgs)} on this host (in place of the plain onnxruntime package)")
    if DEVICES[device].detector != "host" and chosen == ["CPUExecutionProvider"]:
        raise UserError(f"device {device!r} asked for, but the only provider available is the CPU's",
                        fix=f"install {PROVIDER_PACKAGE[PROVIDERS[device][0]]}")
    return chosen


def missing_providers(device: str, wanted: list[str] | None, available: list[str]) -> str | None:
    """Why ONNX Runtime on this host cannot run `device` (no provider of it is
    installed), with the exact install; None when one is. Asked before a case
    runs, so a missing provider is a skip, as a missing trtexec is."""
    wanted = [p for p in (wanted or PROVIDERS.get(device, [])) if p in KNOWN_PROVIDERS]
    if not wanted or any(p in available for p in wanted if p != "CPUExecutionProvider" or
                         DEVICES[device].detector == "host"):
        return None
    pkgs = sorted({PROVIDER_PACKAGE.get(p, "onnxruntime") for p in wanted if p != "CPUExecutionProvider"})
    return (f"ONNX Runtime has none of {wanted} for device {device!r} (available: {available}): "
            f"pip install {' or '.join(pkgs)} (in place of the plain onnxruntime package)")


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"
    formats = ("onnx",)
    devices = tuple(PROVIDERS)

    @classmethod
    def unavailable(cls, options: dict | None = None, device: str | None = None) -> str | None:
        import importlib.util

        if importlib.util.find_spec("onnxruntime") is None:
            pkg = PROVIDER_PACKAGE.get((PROVIDERS.get(device) or ["onnxruntime"])[0], "onnxruntime")
            return f"ONNX Runtime is not installed: pip install {pkg}"
        if device is None or device not in PROVIDERS:
            return None
        from harness.runners.devices import onnxruntime_providers

        return missing_providers(device, (options or {}).get("providers"), onnxruntime_providers())

    def load(self, artifact, input_shape):
        import onnxruntime as ort

        chosen = choose_providers(self.device, self.options.get("providers"), ort.get_available_providers())
        opts = ort.SessionOptions()
        if "intra_op_num_threads" in self.options:
            opts.intra_op_num_threads = int(self.options["intra_op_num_threads"])
        # ONNX Runtime's memory pattern plans one block for all of a run's activations and keeps it:
        # Xception at batch 64 then peaked at 5.2 GB above the loaded model on this 2-core host. Off,
        # activations come from the arena as they are needed; interleaved in one process the throughput
        # ratio (off / on) had a median of 1.013 (Xception bs16) and 0.995 (SE-ResNeXt50 bs16) over 12
        # rounds each. `options: {mem_pattern: true}` in a target restores ONNX Runtime's default.
        opts.enable_mem_pattern = bool(self.options.get("mem_pattern", False))
        self.session_options = {"enable_mem_pattern": opts.enable_mem_pattern}
        extra = self.options.get("provider_options") or {}
        provider_options = [provider_options_for(p, self.device_id, self.precision, extra.get(p)) for p in chosen]
        try:
            self.session = ort.InferenceSession(str(artifact), opts, providers=chosen,
                                                provider_options=provider_options)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise UserError(f"ONNX Runtime could not load the model: {exc}", path=artifact,
                            fix=self.repair_hint(artifact)) from None
        self.providers = self.session.get_providers()
        accelerators = [p for p in chosen if p != "CPUExecutionProvider"]
        if accelerators and not any(p in self.providers for p in accelerators):
            raise UserError(f"ONNX Runtime fell back to {self.providers} although {accelerators} were asked for "
                            f"(the provider failed to load on device {self.device_id})", path=artifact,
                            fix="check the CUDA/cuDNN/TensorRT or CANN libraries the provider needs "
                                "(its warning above names the missing one)")
        self.input_name = self.session.get_inputs()[0].name
        declared = self.session.get_inputs()[0].shape
        if isinstance(declared[0], int) and declared[0] != input_shape[0]:
            raise UserError(f"model input batch is {declared[0]}, asked to run batch {input_shape[0]}",
                            path=artifact, fix="export the model for this batch size or with a dynamic batch")

    def run(self, batch):
        return self.session.run(None, {self.input_name: batch})[0]

    def extra_metrics(self) -> dict:
        return {"onnxruntime_session_options": dict(getattr(self, "session_options", {}))}

    def version(self):
        import onnxruntime as ort

        return ort.__version__
