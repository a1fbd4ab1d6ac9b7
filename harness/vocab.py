"""The harness's vocabulary: device families, stages, artifact formats, metrics.

Every other module takes these names from here; none spells them out again.
Adding a device family is one entry in ``DEVICE_FAMILIES`` plus one detector
in :mod:`harness.runners.devices`; adding a metric is one entry in
``METRICS``; a stage registers itself (:mod:`harness.stages`) and its marker
text comes from ``STAGES``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceFamily:
    """One family of devices a suite can target and pytest can select (`-m name`)."""

    name: str  # marker, suite `device:`, baselines `device:`
    label: str  # for people: "Ascend 310P"
    short: str  # README table column: "310P"
    marker_help: str
    # Which detector in harness.runners.devices decides presence: "host"
    # (always present), "nvidia-smi" or "npu-smi".
    detector: str
    # npu-smi chip names of this family start with one of these ("310P3").
    chip_prefixes: tuple[str, ...] = ()
    # chip names that must match exactly (the plain 310 is "310")
    chip_names: tuple[str, ...] = ()
    # MindSpore's device target for it, if MindSpore runs there.
    mindspore_target: str | None = None
    # ONNX Runtime execution providers for it, best first (empty: ORT does not run there).
    onnxruntime_providers: tuple[str, ...] = ()


# Listed in the order reports show them.
DEVICE_FAMILIES: tuple[DeviceFamily, ...] = (
    DeviceFamily("cpu", "CPU", "CPU", "runs on the host CPU", "host",
                 mindspore_target="CPU", onnxruntime_providers=("CPUExecutionProvider",)),
    DeviceFamily("gpu", "GPU", "GPU", "needs an NVIDIA GPU (nvidia-smi)", "nvidia-smi",
                 mindspore_target="GPU",
                 onnxruntime_providers=("TensorrtExecutionProvider", "CUDAExecutionProvider")),
    DeviceFamily("ascend910", "Ascend 910", "910", "needs an Ascend 910 (npu-smi)", "npu-smi",
                 chip_prefixes=("910",), mindspore_target="Ascend",
                 onnxruntime_providers=("CANNExecutionProvider",)),
    DeviceFamily("ascend310", "Ascend 310", "310", "needs an Ascend 310 (npu-smi)", "npu-smi",
                 chip_names=("310",), mindspore_target="Ascend",
                 onnxruntime_providers=("CANNExecutionProvider",)),
    DeviceFamily("ascend310p", "Ascend 310P", "310P", "needs an Ascend 310P (npu-smi)", "npu-smi",
                 chip_prefixes=("310P",), mindspore_target="Ascend",
                 onnxruntime_providers=("CANNExecutionProvider",)),
)
DEVICES: dict[str, DeviceFamily] = {d.name: d for d in DEVICE_FAMILIES}
DEVICE_NAMES: tuple[str, ...] = tuple(DEVICES)
NPU_FAMILIES: tuple[str, ...] = tuple(d.name for d in DEVICE_FAMILIES if d.detector == "npu-smi")
GPU_FAMILIES: tuple[str, ...] = tuple(d.name for d in DEVICE_FAMILIES if d.detector == "nvidia-smi")
#: the family that is always present (exports are made there)
HOST_DEVICE: str = next(d.name for d in DEVICE_FAMILIES if d.detector == "host")


def device_label(name: str) -> str:
    return DEVICES[name].label if name in DEVICES else name


def device_rank(name: str) -> int:
    """Position in report order; unknown names last."""
    return DEVICE_NAMES.index(name) if name in DEVICES else len(DEVICE_NAMES)


def family_of_chip(chip: str) -> str | None:
    """An `npu-smi info` chip name ("310P3", "Ascend910B") -> its family, or None."""
    c = chip.strip().upper()
    if c.startswith("ASCEND"):
        c = c[len("ASCEND"):]
    for d in DEVICE_FAMILIES:
        if c in (n.upper() for n in d.chip_names) or any(c.startswith(p.upper()) for p in d.chip_prefixes):
            return d.name
    return None


# -- stages ---------------------------------------------------------------------
#: stage -> pytest marker text. The stage implementations register themselves
#: in harness.stages; the names live here so lower layers (schema, metrics,
#: reports) can use them without importing the stages.
STAGES: dict[str, str] = {
    "export": "exports the model (ONNX, MINDIR, OM)",
    "parity": "checks an export against the framework on the same input",
    "accuracy": "measures Top-1/Top-5 on a labelled dataset",
    "throughput": "measures throughput and latency at one batch size",
    "train": "trains briefly with the document's recipe: step time, loss and LR curves, a learns check",
}
STAGE_NAMES: tuple[str, ...] = tuple(STAGES)
#: stages a target may list in its `stages:` (export is per suite, not per target)
TARGET_STAGES: tuple[str, ...] = tuple(s for s in STAGES if s != "export")
#: how the throughput stage drives the runner: the harness's own timing loop,
#: or an MLPerf LoadGen scenario (harness.stages.loadgen)
SCENARIOS: tuple[str, ...] = ("harness", "offline", "singlestream", "server")
#: markers that select no stage of ours but that suites and docs use
OTHER_MARKERS: dict[str, str] = {
    "relative": "checks a cross-device claim",
}

# -- artifact formats -------------------------------------------------------------
#: format -> file suffix. "native" is the framework's in-memory network (no file).
FORMATS: dict[str, str | None] = {"onnx": ".onnx", "mindir": ".mindir", "om": ".om", "native": None}
FORMAT_NAMES: tuple[str, ...] = tuple(FORMATS)
EXPORT_FORMATS: tuple[str, ...] = tuple(f for f, s in FORMATS.items() if s)

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8", "mixed")
TIMING_SCOPES: tuple[str, ...] = ("host", "device")


# -- metrics ------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    name: str
    direction: str  # "higher" or "lower" is better
    unit: str
    stage: str | None  # the stage that measures it here (None: documented only)
    timed: bool = False  # meaningless without a timing scope
    gated: bool = False  # checked by the history gate by default


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("throughput_ips", "higher", "images/s", "throughput", timed=True, gated=True),
    # documented latency (baselines.yaml); measured latencies are the latency_ms_* below
    Metric("latency_ms", "lower", "ms", None, timed=True),
    Metric("latency_ms_mean", "lower", "ms", "throughput", timed=True),
    Metric("latency_ms_p50", "lower", "ms", "throughput", timed=True, gated=True),
    Metric("latency_ms_p90", "lower", "ms", "throughput", timed=True),
    Metric("latency_ms_p99", "lower", "ms", "throughput", timed=True),
    # efficiency (harness.metrics.efficiency): throughput x operations per image, and its share of the peak
    Metric("gflop_s", "higher", "GFLOP/s", "throughput", timed=True),
    Metric("peak_fraction", "higher", "1", "throughput", timed=True),
    Metric("top1", "higher", "%", "accuracy", gated=True),
    Metric("top5", "higher", "%", "accuracy", gated=True),
    # train_loss: documented final/epoch losses; the train stage stores its last step's loss
    Metric("train_loss", "lower", "1", "train"),
    Metric("eval_loss", "lower", "1", None),
    # train stage: mean step time over the detected steady state (host wall clock), its
    # percentiles, images/s (all devices), graph compile + first step, peak memory, learns check
    Metric("train_step_ms", "lower", "ms", "train", timed=True),
    Metric("train_step_ms_p50", "lower", "ms", "train", timed=True),
    Metric("train_step_ms_p90", "lower", "ms", "train", timed=True),
    Metric("train_step_ms_p99", "lower", "ms", "train", timed=True),
    Metric("train_images_per_s", "higher", "images/s", "train", timed=True),
    Metric("train_first_step_s", "lower", "s", "train", timed=True),
    Metric("train_peak_host_mb", "lower", "MB", "train"),
    Metric("train_peak_device_mb", "lower", "MB", "train"),
    Metric("train_learns_drop", "higher", "1", "train"),
    Metric("train_epoch_s", "lower", "s", None, timed=True),
    Metric("train_total_h", "lower", "h", None),
    Metric("eval_total_s", "lower", "s", None),
    Metric("checkpoint_mb", "lower", "MB", None),
    Metric("params_m", "lower", "M", None),
)}
METRIC_DIRECTION: dict[str, str] = {k: m.direction for k, m in METRICS.items()}
METRIC_UNIT: dict[str, str] = {k: m.unit for k, m in METRICS.items()}
TIMED_METRICS = frozenset(k for k, m in METRICS.items() if m.timed)
GATED_METRICS: tuple[str, ...] = tuple(k for k, m in METRICS.items() if m.gated)
