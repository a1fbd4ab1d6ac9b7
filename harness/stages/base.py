"""The stage interface, the case a stage runs, and what a stage may use.

A stage says which cases a suite yields (:meth:`Stage.cases`) and runs one
case into metrics on a :class:`~harness.results.Result`
(:meth:`Stage.run`), raising :class:`~harness.errors.CaseSkipped` or
:class:`~harness.errors.CaseFailed` when it cannot run or misses. It reaches
models, runners, inputs and baselines only through :class:`StageContext`,
which the session builds once per run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterable

import numpy as np
from pydantic import BaseModel

from harness.analysis.comparability import device_model_matches
from harness.analysis.verdicts import Verdict, hold, pack
from harness.config.baselines import select
from harness.config.suite import Suite, TargetSpec
from harness.data import recipes, samples
from harness.errors import CaseFailed, UserError
from harness.metrics import memory
from harness.metrics.timing import TimingConfig
from harness.models.provider import ModelProvider, predict
from harness.results import Result
from harness.runners import devices as device_detection
from harness.runners import get_runner_class
from harness.vocab import DEVICES, HOST_DEVICE


@dataclass
class Case:
    suite: Suite
    stage: str
    device: str
    target: TargetSpec | None = None
    batch_size: int | None = None
    format: str | None = None
    markers: list[str] = field(default_factory=list)
    # runs before every other case of its suite (it makes what they use: a fed checkpoint)
    first: bool = False

    @property
    def name(self) -> str:
        if self.target is None:
            return f"{self.stage}[{self.format}]"
        return f"{self.stage}[{self.target.name}-bs{self.batch_size}]"


class Stage:
    """One kind of measurement. Subclasses set ``name`` (a key of
    :data:`harness.vocab.STAGES`, or their own with ``marker_help``) and may
    declare ``schema``: a pydantic model for a top-level section of the suite
    named after the stage, handed to them as ``case.suite.stage_config[name]``."""

    name: ClassVar[str] = "base"
    marker_help: ClassVar[str | None] = None
    schema: ClassVar[type[BaseModel] | None] = None

    def cases(self, suite: Suite) -> Iterable[Case]:
        """One case per target and batch size that lists this stage, by default."""
        for t in suite.targets:
            if self.name in t.stages:
                for b in self.batch_sizes(suite, t):
                    yield Case(suite, self.name, t.device, t, b, t.format, [t.device, self.name])

    def batch_sizes(self, suite: Suite, target: TargetSpec) -> list[int]:
        return list(target.batch_sizes)

    def run(self, case: Case, ctx: "StageContext", res: Result) -> None:
        raise NotImplementedError

    def weights(self, suite: Suite, cache_root) -> "Path | None":
        """Train or load: weights this stage makes for the suite's other stages
        (the train stage's ``train.feeds``), made now if not cached; None: none."""
        return None


def torch_native(target) -> bool:
    """Does this target's runner run the suite's PyTorch network (runner: torch)?"""
    return target.format == "native" and getattr(get_runner_class(target.runner), "native_framework", None) == "torch"


class StageContext:
    """What stages share in one run: models and artifacts, runners, inputs, baselines."""

    def __init__(self, models: ModelProvider, *, baselines=None, baselines_path=None,
                 timing_override: dict | None = None, stages: Iterable[Stage] = ()):
        self.models = models
        # "train or load": the provider asks the stages for weights one of them makes (a fed checkpoint)
        makers = list(stages)
        models.trained = lambda suite: next((w for s in makers if (w := s.weights(suite, models.cache.root))), None)
        self.baselines = baselines
        self.baselines_path = baselines_path
        self.timing_override = {k: v for k, v in (timing_override or {}).items() if v is not None}
        self._pool: dict = {}
        # --scenario / --harness-scenario: every throughput case under this LoadGen scenario
        self.scenario_override: str | None = None

    predict = staticmethod(predict)

    @staticmethod
    def recipe(suite: Suite) -> recipes.Recipe:
        return recipes.get_recipe(suite.input.preprocess, suite.input.size)

    def inputs(self, suite: Suite, batch_size: int) -> np.ndarray:
        """A batch of preprocessed generated images (content does not change the
        compute of these networks, but realistic value ranges keep fp16 honest)."""
        pool = self._pool.get(suite.path)
        if pool is None:
            gen = samples.synthetic_dataset(8, suite.source.num_classes, seed=suite.dataset.seed)
            recipe = self.recipe(suite)
            pool = self._pool[suite.path] = np.stack([recipe(s.open()) for s in gen])
        reps = -(-batch_size // len(pool))
        return np.ascontiguousarray(np.concatenate([pool] * reps)[:batch_size])

    def timing(self, suite: Suite, target) -> TimingConfig:
        # overrides pass the suite's own rules (TimingSpec), not around them
        return TimingConfig.from_spec(suite.timing_for(target).with_overrides(self.timing_override))

    @staticmethod
    def model_file(case: Case) -> str:
        """What made a case's outputs, for messages: the user's ONNX file, the
        checkpoint, or the architecture's randomly initialised network."""
        src = case.suite.source
        if src.kind == "onnx" and src.path:
            return str(case.suite.resolve(src.path).resolve())
        if src.checkpoint:
            return str(case.suite.resolve(src.checkpoint).resolve())
        return f"{src.kind} {src.arch} (no checkpoint: randomly initialised, from {case.suite.path})"

    def check_memory(self, case: Case, batch_size: int | None = None, *, export: bool = False) -> None:
        """Refuse a batch that cannot fit in this host's memory (harness.metrics.memory),
        before anything of that size is exported or allocated. `export`: the batch an
        export traces with (its input and output count; what a runtime holds comes later)."""
        batch_size = batch_size or case.batch_size
        if batch_size is None or case.target is None and not export:
            return
        inp = case.suite.input
        acts = None if export else self.models.activation_bytes(case.suite)
        est = memory.estimate(batch_size, (inp.channels, inp.size, inp.size), case.suite.source.num_classes,
                              per_sample_activations=acts)
        memory.check_fits(est, where=f"{case.suite.path} ({case.name})",
                          host_only=export or case.device != HOST_DEVICE, what="export at batch" if export else "batch")

    # -- the case's artifact and runner ---------------------------------------------------
    def target_artifact(self, case: Case, res: Result):
        """The thing the case's runner loads: a network ("native") or an artifact path."""
        if case.format == "native":
            res.artifact_sha256 = None
            if case.target is not None and torch_native(case.target):
                net, info = self.models.torch_network(case.suite)
                res.metrics.update(torch_network=info["network"], torch_weights=info["weights"])
                return net
            target = "CPU"
            if case.target is not None and case.target.runner == "mindspore":
                target = DEVICES[case.device].mindspore_target or "CPU"
            return self.models.network(case.suite, target)
        gears = getattr(case.target, "dynamic_batch", None) if case.target is not None else None
        if case.format == "om" and gears:
            gears = case.target.batch_sizes if gears is True else gears
            art = self.models.om(case.suite, case.batch_size, case.device, gears=list(gears))
        else:
            art = self.models.artifact(case.suite, case.format, case.batch_size, case.device)
        res.artifact_sha256 = art.sha256
        if art.command:
            res.metrics["artifact_command"] = art.command
        if art.path in self.models.om_source:
            res.metrics["source_sha256"] = self.models.om_source[art.path]
        return art.path

    def runner(self, case: Case, res: Result, artifact):
        """The case's runner, loaded with ``artifact`` (use it as a context manager)."""
        t = case.target
        cls = get_runner_class(t.runner)
        opts = dict(t.options)
        opts.setdefault("num_classes", case.suite.source.num_classes)
        opts.setdefault("artifact_cache", str(self.models.cache.root))
        if getattr(t, "dynamic_batch", None):
            opts["dynamic_batch"] = True
        res.metrics["device_model"] = device_detection.device_model(t.device, index=res.device_index) \
            or res.metrics.get("device_model") or "absent"
        runner = cls(t.device, t.device_id, t.precision, opts)
        shape = (case.batch_size, case.suite.input.channels, case.suite.input.size, case.suite.input.size)
        runner.load(artifact, shape)
        res.metrics.update(getattr(runner, "extra_metrics", dict)())
        res.runner_version = runner.version()
        res.timing_scope = runner.timing_scope
        return runner

    # -- documented figures ------------------------------------------------------------------
    def hold_baselines(self, case: Case, res: Result, metric: str, value: float) -> list[Verdict]:
        """Hold ``value`` against every documented figure of the case's model,
        metric, device and batch (a figure of a named device model, e.g. a T4,
        only on that model); a failed one fails the case."""
        if self.baselines is None:
            return []
        found = select(self.baselines, model=case.suite.model, metric=metric, device=case.device,
                       batch_size=case.batch_size)
        here = res.metrics.get("device_model") or device_detection.device_model(case.device, index=res.device_index)
        found = [b for b in found if device_model_matches(b.device_model, here)]
        verdicts = [hold(value, b, timing_scope=res.timing_scope) for b in found]
        self.record(res, verdicts)
        return verdicts

    @staticmethod
    def record(res: Result, verdicts: list[Verdict]) -> None:
        if not verdicts:
            return
        res.baseline = pack(verdicts)
        failed = [v for v in verdicts if v.failed]
        if failed:
            raise CaseFailed("; ".join(v.reason for v in failed))

    def baselines_by_id(self, ids: list[str], suite: Suite) -> list:
        by_id = {b.id: b for b in self.baselines.baselines}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise UserError(f"accuracy_baselines names unknown ids: {missing}", path=suite.path,
                            fix=f"use ids from {self.baselines_path}")
        return [by_id[i] for i in ids]
