"""Plan: read a suite, check it against the registries, turn it into cases.

The plugin (at collection), the CLI (`harness run` and `validate`, before
pytest starts) and the session use these, so a bad suite fails the same way
everywhere: one UserError naming the file and the fix.
"""

from __future__ import annotations

from pathlib import Path

from harness.config.suite import Suite, TargetSpec, load_suite
from harness.data.recipes import get_recipe
from harness.errors import UserError
from harness.models.cards import card_for
from harness.runners import get_runner_class
from harness.stages import Case, build_plan, stage_sections, stages
from harness.train.plan import check_overlap
from harness.vocab import DEVICES


def read_suite(path: str | Path) -> Suite:
    """A suite file, its stage sections validated by their stages' schemas."""
    return load_suite(path, stage_sections())


def runner_class_for(target: TargetSpec):
    """The target's runner class, refusing a format or device the runner cannot run."""
    cls = get_runner_class(target.runner)
    if target.format not in cls.formats:
        raise UserError(f"target {target.name!r}: runner {target.runner!r} cannot run format {target.format!r} "
                        f"(it runs {', '.join(cls.formats)})", fix="change the target's format or runner")
    if cls.devices and target.device not in cls.devices:
        raise UserError(f"target {target.name!r}: runner {target.runner!r} does not run on {target.device} "
                        f"(it runs on {', '.join(DEVICES[d].label for d in cls.devices if d in DEVICES)})",
                        fix="change the target's device or runner")
    return cls


def validate_suite(suite: Suite) -> None:
    """Checks that need the registries: done at collection so a bad suite
    fails before anything runs, naming the file."""
    try:
        if suite.source.kind == "mindcv":
            card_for(suite.source.arch)
        get_recipe(suite.input.preprocess)
        known = stages()
        for t in suite.targets:
            runner_class_for(t)
            unknown = [s for s in t.stages if s not in known or s == "export"]
            if unknown:
                raise UserError(f"target {t.name!r} lists unknown stage(s) {unknown}",
                                fix=f"a target's stages are some of: {', '.join(s for s in known if s != 'export')}")
            if t.format in ("onnx", "mindir") and suite.source.kind == "mindcv" and t.format not in suite.export:
                raise UserError(f"target {t.name!r} runs {t.format} but export: does not list it",
                                fix=f"add {t.format} to export:")
        check_overlap(suite)  # training images that accuracy would score: refused unless allowed
    except UserError as exc:
        if exc.path is None:
            raise UserError(exc.message, path=suite.path, fix=exc.fix) from None
        raise


__all__ = ["Case", "build_plan", "read_suite", "runner_class_for", "validate_suite"]
