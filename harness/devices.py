"""Which device families this host has, and why not when it has not.

Detection asks the tools a user would: `npu-smi info` (the chip name decides
310 / 310P / 910), `nvidia-smi -L` for GPUs. CPU is always present.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass, field


@dataclass
class DeviceReport:
    present: dict[str, bool] = field(default_factory=dict)
    # family -> why it is absent (named tool missing, no such chip ...)
    why_absent: dict[str, str] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)


# npu-smi prints the chip name in its table: "310", "310P3", "910B" ...
_NPU_CHIP = re.compile(r"\b(910[A-Z0-9]*|310P\d*|310B\d*|310)\b")


def family_of_chip(chip: str) -> str | None:
    chip = chip.upper()
    if chip.startswith("910"):
        return "ascend910"
    if chip.startswith("310P"):
        return "ascend310p"
    if chip == "310":
        return "ascend310"
    return None


def parse_npu_smi_chips(text: str) -> list[str]:
    return _NPU_CHIP.findall(text)


def _run(cmd: list[str]) -> tuple[int, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return p.returncode, p.stdout + p.stderr


@functools.lru_cache(maxsize=1)
def detect() -> DeviceReport:
    rep = DeviceReport()
    rep.present["cpu"] = True

    if shutil.which("nvidia-smi") is None:
        rep.why_absent["gpu"] = "no GPU: nvidia-smi not found"
    else:
        rc, out = _run(["nvidia-smi", "-L"])
        gpus = [line for line in out.splitlines() if line.startswith("GPU ")]
        if rc == 0 and gpus:
            rep.present["gpu"] = True
            rep.details["gpu"] = "; ".join(gpus)
        else:
            rep.why_absent["gpu"] = f"no GPU: nvidia-smi -L exited {rc} listing none"

    ascend = ("ascend910", "ascend310", "ascend310p")
    label = {"ascend910": "Ascend 910", "ascend310": "Ascend 310", "ascend310p": "Ascend 310P"}
    if shutil.which("npu-smi") is None:
        for fam in ascend:
            rep.why_absent[fam] = f"no {label[fam]}: npu-smi not found"
    else:
        rc, out = _run(["npu-smi", "info"])
        chips = parse_npu_smi_chips(out) if rc == 0 else []
        families = {family_of_chip(c) for c in chips}
        for fam in ascend:
            if fam in families:
                rep.present[fam] = True
                rep.details[fam] = ", ".join(c for c in chips if family_of_chip(c) == fam)
            else:
                seen = ", ".join(sorted(set(chips))) or "no chip"
                rep.why_absent[fam] = f"no {label[fam]}: npu-smi info reports {seen}"
    for fam in ("gpu", *ascend):
        rep.present.setdefault(fam, False)
    return rep
