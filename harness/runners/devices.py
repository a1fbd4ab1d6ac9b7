"""Which device families this host has, and why not when it has not.

Detection asks the tools a user would: `npu-smi info` (the chip name decides
310 / 310P / 910), `nvidia-smi` for GPUs, CANN's install record for the
toolkit version, ONNX Runtime's providers and MindSpore's backend plugins.
CPU is always present. Every parser takes text, so it is tested against
captured outputs (tests/fixtures/ascend/) on hosts without the hardware.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.errors import UserError
from harness.vocab import DEVICE_FAMILIES, DEVICES, NPU_FAMILIES, family_of_chip

# Families found by npu-smi, and every family's label, come from the vocabulary.
ASCEND = NPU_FAMILIES
LABEL = {d.name: d.label for d in DEVICE_FAMILIES}


@dataclass
class NpuInfo:
    """What `npu-smi info` (and `npu-smi info -t board`) say about the NPUs."""

    chips: list[str] = field(default_factory=list)  # one Name per NPU row, e.g. ["310P3", "310P3"]
    npu_smi_version: str | None = None
    driver_version: str | None = None
    firmware_version: str | None = None

    @property
    def count(self) -> int:
        return len(self.chips)


@dataclass
class GpuInfo:
    index: int
    name: str
    driver_version: str | None = None
    memory_total: str | None = None


@dataclass
class DeviceReport:
    present: dict[str, bool] = field(default_factory=dict)
    # family -> why it is absent (named tool missing, no such chip ...)
    why_absent: dict[str, str] = field(default_factory=dict)
    # family -> the device names, e.g. {"ascend310p": "310P3", "gpu": "GPU 0: Tesla T4"}
    details: dict[str, str] = field(default_factory=dict)
    npu: NpuInfo | None = None
    gpus: list[GpuInfo] = field(default_factory=list)
    cann_version: str | None = None
    onnxruntime_providers: list[str] = field(default_factory=list)
    mindspore_targets: list[str] = field(default_factory=list)

    def chips(self, family: str) -> list[str]:
        """NPU chip names of one Ascend family on this host."""
        if self.npu is None:
            return []
        return [c for c in self.npu.chips if family_of_chip(c) == family]

    def as_env(self) -> dict:
        """The part recorded with every result."""
        return {
            "npu": asdict(self.npu) if self.npu else None,
            "gpus": [asdict(g) for g in self.gpus],
            "cann_version": self.cann_version,
            "onnxruntime_providers": self.onnxruntime_providers,
            "mindspore_targets": self.mindspore_targets,
        }


# -- npu-smi -------------------------------------------------------------------
def require_family(chip: str, *, where: str = "npu-smi info") -> str:
    """family_of_chip, or a UserError naming the chip and what is known."""
    fam = family_of_chip(chip)
    if fam is None:
        raise UserError(f"{where} reports chip {chip!r}, which this harness does not know "
                        f"(it knows {_known_chips()})", fix="run on a host with a known chip, or add the chip to "
                        "its family's chip_names/chip_prefixes in harness/vocab.py")
    return fam


def _known_chips() -> str:
    return ", ".join([*(n for d in DEVICE_FAMILIES for n in d.chip_names),
                      *(f"{p}*" for d in DEVICE_FAMILIES for p in d.chip_prefixes)])


# `| 0       310P3                 | OK              | NA  45  0 / 0 |`: the first
# row of each NPU's pair; the second (`| 0  0 | 0000:01:00.0 | ...`) has a bus id.
_NPU_ROW = re.compile(r"^\|\s*(\d+)\s+([A-Za-z0-9][\w.-]*)\s*\|\s*(OK|Warning|Alarm|Critical|Unknown|Fault)\s*\|",
                      re.I)
_SMI_VERSION = re.compile(r"npu-smi\s+(\S+)\s+Version:\s*(\S+)")
_KV = re.compile(r"^\s*([A-Za-z][\w ()/.-]*?)\s*:\s*(.*?)\s*$")


def parse_npu_smi_info(text: str) -> NpuInfo:
    """The NPU table of `npu-smi info`. Raises UserError when the text has no
    such table (not npu-smi output, or a failing driver)."""
    info = NpuInfo()
    m = _SMI_VERSION.search(text)
    if m:
        info.npu_smi_version, info.driver_version = m.group(1), m.group(2)
    for line in text.splitlines():
        m = _NPU_ROW.match(line.strip())
        if m and m.group(2) not in ("Name", "Chip", "Device"):
            info.chips.append(m.group(2))
    if not info.chips:
        head = "\n".join(text.strip().splitlines()[:5]) or "(nothing)"
        raise UserError("npu-smi info printed no NPU table (expected rows like '| 0  310P3 | OK | ...'); it "
                        "printed:\n" + head, fix="check the Ascend driver (npu-smi info should list each NPU)")
    return info


def parse_npu_smi_chips(text: str) -> list[str]:
    try:
        return parse_npu_smi_info(text).chips
    except UserError:
        return []


def parse_key_values(text: str) -> dict[str, str]:
    """`Key : value` lines (npu-smi info -t board) and `key=value` lines
    (CANN's *_install.info, the driver's version.info)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line and ":" not in line.split("=", 1)[0]:
            k, v = line.split("=", 1)
        else:
            m = _KV.match(line)
            if not m:
                continue
            k, v = m.group(1), m.group(2)
        out[k.strip().lower()] = v.strip()
    return out


def parse_npu_smi_board(text: str) -> dict[str, str | None]:
    """Driver ("Software Version") and firmware from `npu-smi info -t board -i N`."""
    kv = parse_key_values(text)
    return {"driver_version": kv.get("software version"), "firmware_version": kv.get("firmware version")}


# -- nvidia-smi ----------------------------------------------------------------
NVIDIA_QUERY = ["nvidia-smi", "--query-gpu=index,name,driver_version,memory.total", "--format=csv,noheader"]


def parse_nvidia_smi_csv(text: str) -> list[GpuInfo]:
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3 and parts[0].isdigit():
            gpus.append(GpuInfo(int(parts[0]), parts[1], parts[2] or None, parts[3] if len(parts) > 3 else None))
    return gpus


def parse_nvidia_smi_list(text: str) -> list[GpuInfo]:
    """`nvidia-smi -L`: `GPU 0: Tesla T4 (UUID: GPU-...)`."""
    out = []
    for m in re.finditer(r"^GPU (\d+): (.+?)(?: \(UUID: [^)]*\))?\s*$", text, re.M):
        out.append(GpuInfo(int(m.group(1)), m.group(2)))
    return out


# -- CANN, ONNX Runtime, MindSpore ------------------------------------------
CANN_HOMES = ("ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH")
CANN_DEFAULT = "/usr/local/Ascend/ascend-toolkit/latest"


def cann_home(environ: dict | None = None) -> Path | None:
    environ = os.environ if environ is None else environ
    for var in CANN_HOMES:
        if environ.get(var):
            return Path(environ[var])
    return Path(CANN_DEFAULT) if Path(CANN_DEFAULT).is_dir() else None


def cann_version(home: Path | None = None) -> str | None:
    """The toolkit version from its install record (`version=7.0.RC1`)."""
    home = home if home is not None else cann_home()
    if home is None:
        return None
    candidates = [*home.glob("*-linux/ascend_toolkit_install.info"), home / "ascend_toolkit_install.info",
                  *home.glob("*/ascend_toolkit_install.info"), home / "version.cfg"]
    for p in candidates:
        try:
            kv = parse_key_values(p.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
        v = kv.get("version") or kv.get("toolkit_installed_version")
        if v:
            return v.strip("[]\"' ").split(":")[-1] or v
    return None


def require_cann(environ: dict | None = None) -> Path:
    """The CANN toolkit's home, or a UserError saying how to set it up."""
    home = cann_home(environ)
    if home is None or not home.is_dir():
        raise UserError("no CANN environment: ASCEND_TOOLKIT_HOME is not set and "
                        f"{CANN_DEFAULT} does not exist",
                        fix="install the CANN toolkit and source /usr/local/Ascend/ascend-toolkit/set_env.sh")
    return home


def onnxruntime_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def mindspore_targets() -> list[str]:
    """Backends the installed MindSpore build carries (its lib/plugin folder),
    without importing MindSpore (slow, and noisy on hosts without devices)."""

    spec = importlib.util.find_spec("mindspore")
    if spec is None or not spec.submodule_search_locations:
        return []
    plugin = Path(list(spec.submodule_search_locations)[0]) / "lib" / "plugin"
    names = [p.name.lower() for p in plugin.iterdir()] if plugin.is_dir() else []
    targets = ["CPU"]
    if any("gpu" in n for n in names):
        targets.append("GPU")
    if any("ascend" in n for n in names):
        targets.append("Ascend")
    return targets


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    # Arm kernels list no "model name"; lscpu names the part from its id (Kunpeng-920, Neoverse-N1)
    rc, out = _run(["lscpu"]) if shutil.which("lscpu") else (1, "")
    named = [ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name:")]
    return (named[0] if rc == 0 and named and named[0] != "-" else None) or platform.processor() or platform.machine()


# -- running the tools ---------------------------------------------------------
def _run(cmd: list[str]) -> tuple[int, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return p.returncode, p.stdout + p.stderr


def _detect_gpu(rep: DeviceReport, run, which) -> None:
    families = [d for d in DEVICE_FAMILIES if d.detector == "nvidia-smi"]
    if which("nvidia-smi") is None:
        for d in families:
            rep.why_absent[d.name] = f"no {d.label}: nvidia-smi not found"
        return
    rc, out = run(NVIDIA_QUERY)
    gpus = parse_nvidia_smi_csv(out) if rc == 0 else []
    if not gpus:
        rc, out = run(["nvidia-smi", "-L"])
        gpus = parse_nvidia_smi_list(out) if rc == 0 else []
    rep.gpus = gpus
    for d in families:
        if gpus:
            rep.present[d.name] = True
            rep.details[d.name] = "; ".join(f"GPU {g.index}: {g.name}" for g in gpus)
        else:
            rep.why_absent[d.name] = f"no {d.label}: nvidia-smi exited {rc} listing none"


def _detect_npu(rep: DeviceReport, run, which) -> None:
    if which("npu-smi") is None:
        for fam in ASCEND:
            rep.why_absent[fam] = f"no {LABEL[fam]}: npu-smi not found"
        return
    rc, out = run(["npu-smi", "info"])
    try:
        if rc != 0:
            raise UserError(f"npu-smi info exited {rc}: {out.strip()[-300:]}")
        info = parse_npu_smi_info(out)
    except UserError as exc:
        for fam in ASCEND:
            rep.why_absent[fam] = f"no {LABEL[fam]}: {str(exc).splitlines()[0]}"
        return
    rc, board = run(["npu-smi", "info", "-t", "board", "-i", "0"])
    if rc == 0:
        b = parse_npu_smi_board(board)
        info.driver_version = b["driver_version"] or info.driver_version
        info.firmware_version = b["firmware_version"]
    rep.npu = info
    unknown = sorted({c for c in info.chips if family_of_chip(c) is None})
    for fam in ASCEND:
        mine = [c for c in info.chips if family_of_chip(c) == fam]
        if mine:
            rep.present[fam] = True
            rep.details[fam] = ", ".join(mine)
        else:
            seen = ", ".join(sorted(set(info.chips)))
            extra = f" ({', '.join(unknown)} unknown to this harness)" if unknown else ""
            rep.why_absent[fam] = f"no {LABEL[fam]}: npu-smi info reports {seen}{extra}"


def _detect_host(rep: DeviceReport, run, which) -> None:
    for d in DEVICE_FAMILIES:
        if d.detector == "host":
            rep.present[d.name] = True


#: vocabulary `detector` -> the function that fills a DeviceReport for its families
DETECTORS = {"host": _detect_host, "nvidia-smi": _detect_gpu, "npu-smi": _detect_npu}


def detect_with(run=_run, which=shutil.which) -> DeviceReport:
    """Detection with an injectable command runner and PATH lookup (tests feed fixtures)."""
    rep = DeviceReport()
    for detector in dict.fromkeys(d.detector for d in DEVICE_FAMILIES):
        DETECTORS[detector](rep, run, which)
    if rep.npu is not None:
        rep.cann_version = cann_version()
    rep.onnxruntime_providers = onnxruntime_providers()
    rep.mindspore_targets = mindspore_targets()
    for d in DEVICE_FAMILIES:
        rep.present.setdefault(d.name, False)
    return rep


@functools.lru_cache(maxsize=1)
def detect() -> DeviceReport:
    return detect_with(_run)


def device_model(family: str, report: DeviceReport | None = None, index: int | None = None) -> str | None:
    """The device's own name for results: "Tesla T4", "310P3", the CPU model.
    ``index``: the device the case ran on (nvidia-smi's number, npu-smi's row),
    on a host with several models; default the first of its family."""
    rep = report or detect()
    detector = DEVICES[family].detector if family in DEVICES else None
    if detector == "nvidia-smi":
        mine = [g.name for g in rep.gpus if index is None or g.index == index]
        return (mine or [g.name for g in rep.gpus] or [None])[0]
    if detector == "npu-smi":
        chips = rep.chips(family)
        if index is not None and rep.npu is not None and 0 <= index < rep.npu.count \
                and rep.npu.chips[index] in chips:
            return rep.npu.chips[index]
        return chips[0] if chips else None
    if detector == "host":
        return cpu_model()
    return None


# -- one device per pytest-xdist worker ---------------------------------------
def _visible(environ, var: str, found: list[int]) -> list[int]:
    # a host already narrowed (ASCEND_RT_VISIBLE_DEVICES=4,5) shares out only those
    given = [int(x) for x in environ.get(var, "").split(",") if x.strip().isdigit()]
    return given or found


def pin_worker(worker: int, report: DeviceReport | None = None, environ=None, families=None) -> dict[str, int]:
    """Give pytest-xdist worker number `worker` its own device: NPUs by
    ASCEND_RT_VISIBLE_DEVICES (the runtime then shows that one device as
    logical 0, hence ASCEND_DEVICE_ID=0), GPUs by CUDA_VISIBLE_DEVICES. Set in
    `environ` (default os.environ) before any framework starts; returns
    {family: device index} for the results. Indices are the runtime's: NPUs in
    `npu-smi info` row order, GPUs as nvidia-smi numbers them. With more
    workers than devices, workers share devices round-robin. `families`: only
    devices of these (the ones `-m` selects); default every family present."""
    rep = report or detect()
    env = os.environ if environ is None else environ
    pinned: dict[str, int] = {}
    if rep.npu is not None and rep.npu.chips:
        mine = [i for i, c in enumerate(rep.npu.chips) if not families or family_of_chip(c) in families]
        ids = _visible(env, "ASCEND_RT_VISIBLE_DEVICES", mine or list(range(rep.npu.count)))
        idx = ids[worker % len(ids)]
        env["ASCEND_RT_VISIBLE_DEVICES"] = str(idx)
        env["ASCEND_DEVICE_ID"] = "0"
        chip = rep.npu.chips[idx] if idx < rep.npu.count else rep.npu.chips[0]
        fam = family_of_chip(chip)
        if fam:
            pinned[fam] = idx
    if rep.gpus and (not families or "gpu" in families or not pinned):
        ids = _visible(env, "CUDA_VISIBLE_DEVICES", [g.index for g in rep.gpus])
        idx = ids[worker % len(ids)]
        env["CUDA_VISIBLE_DEVICES"] = str(idx)
        pinned["gpu"] = idx
    return pinned


def device_count(families) -> int:
    """How many devices of these families this host has (pytest-xdist's `-n auto`)."""
    rep = detect()
    n = 0
    for fam in families:
        n += len(rep.gpus) if fam == "gpu" else len(rep.chips(fam))
    return n
