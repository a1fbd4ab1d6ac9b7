"""Plan: a suite becomes a list of cases, one per stage x target x batch size."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.errors import UserError
from harness.suite import Suite, TargetSpec


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


def runner_class_for(target: TargetSpec):
    """The target's runner class, refusing a format the runner cannot run."""
    from harness.runners import get_runner_class

    cls = get_runner_class(target.runner)
    if target.format not in cls.formats:
        raise UserError(f"target {target.name!r}: runner {target.runner!r} cannot run format {target.format!r} "
                        f"(it runs {', '.join(cls.formats)})", fix="change the target's format or runner")
    return cls


def validate_suite(suite: Suite) -> None:
    """Checks that need the registries: done at collection so a bad suite
    fails before anything runs, naming the file."""
    from harness.data import get_recipe

    try:
        if suite.source.kind == "mindcv":
            from harness.networks import ARCHS

            if suite.source.arch not in ARCHS:
                import difflib

                near = difflib.get_close_matches(suite.source.arch, ARCHS, n=1)
                raise UserError(f"unknown source.arch {suite.source.arch!r}" + (f"; did you mean {near[0]}?" if near
                                                                                else ""),
                                fix=f"use one of: {', '.join(ARCHS)}")
        get_recipe(suite.input.preprocess)
        for t in suite.targets:
            runner_class_for(t)
            if t.format in ("onnx", "mindir") and suite.source.kind == "mindcv" and t.format not in suite.export:
                raise UserError(f"target {t.name!r} runs {t.format} but export: does not list it",
                                fix=f"add {t.format} to export:")
    except UserError as exc:
        if exc.path is None:
            raise UserError(str(exc), path=suite.path) from None
        raise
