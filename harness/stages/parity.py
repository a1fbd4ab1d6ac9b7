"""Stage `parity`: an export against its framework network on the same input."""

from __future__ import annotations

from harness.errors import CaseFailed, CaseSkipped
from harness.metrics import compare_outputs
from harness.stages.base import Case, Stage


class ParityStage(Stage):
    name = "parity"

    def cases(self, suite):
        for t in suite.targets:
            if self.name in t.stages and t.format != "native":
                yield Case(suite, self.name, t.device, t, suite.parity.batch_size, t.format, [t.device, self.name])

    def run(self, case, ctx, res):
        suite = case.suite
        if suite.source.kind == "onnx":
            raise CaseSkipped("the source is an ONNX file: no framework network to compare the export against")
        x = ctx.inputs(suite, case.batch_size)
        reference = ctx.predict(ctx.models.network(suite), x)
        with ctx.runner(case, res, ctx.target_artifact(case, res)) as runner:
            out = runner.run(x)
        p = compare_outputs(reference, out, max_abs_diff_rel=suite.parity.max_abs_diff_rel,
                            min_cosine=suite.parity.min_cosine)
        res.metrics.update(p.as_metrics())
        framework = "PyTorch" if suite.source.kind == "pytorch" else "MindSpore"
        res.reason = f"{case.format} on {case.target.runner} vs {framework}: {p.reason}"
        if not p.passed:
            raise CaseFailed(res.reason)
