"""Stages as plugins: one module per stage, found by name.

Built-in stages are listed below; a separate package adds one through an
entry point in the ``harness.stages`` group (``name = "pkg.module:StageClass"``).
The plan (:func:`build_plan`) asks every stage for its cases, in the
vocabulary's stage order, then any others.
"""

from __future__ import annotations

import importlib
import importlib.metadata

from harness.config.suite import Suite
from harness.errors import UserError
from harness.stages.base import Case, Stage, StageContext
from harness.vocab import STAGE_NAMES

ENTRY_POINT_GROUP = "harness.stages"

_BUILTIN = {
    "export": "harness.stages.export:ExportStage",
    "parity": "harness.stages.parity:ParityStage",
    "accuracy": "harness.stages.accuracy:AccuracyStage",
    "throughput": "harness.stages.throughput:ThroughputStage",
    "train": "harness.stages.train:TrainStage",
}
_INSTANCES: dict[str, Stage] = {}


def _load(spec: str) -> type[Stage]:
    module, cls = spec.split(":")
    return getattr(importlib.import_module(module), cls)


def stages() -> dict[str, Stage]:
    """Every stage, built-ins first (in vocabulary order), then entry points."""
    if not _INSTANCES:
        found = {name: _load(spec) for name, spec in _BUILTIN.items()}
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name not in found:
                try:
                    found[ep.name] = ep.load()
                except Exception as exc:
                    raise UserError(f"stage {ep.name!r} from entry point {ep.value!r} failed to load: {exc}",
                                    fix="reinstall the package that provides it") from None
        order = sorted(found, key=lambda n: STAGE_NAMES.index(n) if n in STAGE_NAMES else len(STAGE_NAMES))
        _INSTANCES.update({n: found[n]() for n in order})
    return _INSTANCES


def register_stage(cls: type[Stage]) -> type[Stage]:
    """Class decorator for stages defined outside an installed package (tests, conftest)."""
    stages()[cls.name] = cls()
    return cls


def get_stage(name: str) -> Stage:
    found = stages()
    if name not in found:
        raise UserError(f"unknown stage {name!r}", fix=f"use one of: {', '.join(found)}")
    return found[name]


def stage_sections() -> dict:
    """Top-level suite sections that stages declare: {stage name: pydantic model}."""
    return {n: s.schema for n, s in stages().items() if s.schema is not None}


def build_plan(suite: Suite) -> list[Case]:
    """The suite's cases: one per stage x target x batch size (export: one per format)."""
    cases = [case for stage in stages().values() for case in stage.cases(suite)]
    # cases the others use first (a fed training run), suite-level cases (export), then target by
    # target in the suite's order
    position = {id(t): i for i, t in enumerate(suite.targets)}
    return sorted(cases, key=lambda c: -2 if c.first else -1 if c.target is None else position[id(c.target)])


__all__ = ["Case", "Stage", "StageContext", "build_plan", "get_stage", "register_stage", "stage_sections", "stages"]
