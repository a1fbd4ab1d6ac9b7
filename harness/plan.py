"""Plan: a suite becomes a list of cases, one per stage x target x batch size."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.suite import Suite, TargetSpec

# Export runs on the host for ONNX/MINDIR; OM conversion needs atc (CANN).
HOST_FORMATS = ("onnx", "mindir")


@dataclass
class Case:
    suite: Suite
    stage: str
    device: str
    target: TargetSpec | None = None
    batch_size: int | None = None
    format: str | None = None
    markers: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        if self.stage == "export":
            return f"export[{self.format}]"
        return f"{self.stage}[{self.target.name}-bs{self.batch_size}]"


def build_plan(suite: Suite) -> list[Case]:
    cases: list[Case] = []
    om_devices = sorted({t.device for t in suite.targets if t.format == "om"}) or ["ascend310"]
    for fmt in suite.export:
        devices = om_devices if fmt == "om" else ["cpu"]
        cases.append(Case(suite, "export", devices[0], format=fmt, markers=[*devices, "export"]))
    for t in suite.targets:
        if "parity" in t.stages and t.format != "native":
            cases.append(Case(suite, "parity", t.device, t, suite.parity.batch_size, t.format,
                              [t.device, "parity"]))
        if "accuracy" in t.stages:
            b = t.batch_sizes[0]
            cases.append(Case(suite, "accuracy", t.device, t, b, t.format, [t.device, "accuracy"]))
        if "throughput" in t.stages:
            for b in t.batch_sizes:
                cases.append(Case(suite, "throughput", t.device, t, b, t.format, [t.device, "throughput"]))
    return cases
