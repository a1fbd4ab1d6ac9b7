"""Stage `parity`: an export against its framework network on the same input.

A target running the PyTorch network itself (runner: torch, format native)
is checked the other way round: its output (with its precision, layout,
compile and CUDA graph options) against ONNX Runtime on the CPU running the
ONNX export of the same network, in float32. Reduced precision (fp16, bf16,
mixed) is held to looser bounds than the suite's float32 ones, named in the
reason: at least REDUCED[precision]."""

from __future__ import annotations

from harness.errors import CaseFailed, CaseSkipped
from harness.metrics import compare_outputs
from harness.runners import get_runner_class, why_unavailable
from harness.stages.base import Case, Stage, torch_native
from harness.vocab import HOST_DEVICE

#: precision -> (max |diff| / scale, min cosine) that an autocast run must reach at least. Measured on the
#: CPU (torch 2.14, channels_last, 96 px, random weights): fp16 reached 0.0021 / 0.0011 / 0.021 and bf16
#: 0.018 / 0.0092 / 0.060 for SE-ResNeXt50 / Xception / EfficientNet-B0 (whose random-init logits are ~1e-6,
#: so their relative error is the largest); cosine >= 0.99985 throughout. The bounds leave 2.5x room.
REDUCED = {"fp16": (5e-2, 0.999), "mixed": (5e-2, 0.999), "bf16": (0.15, 0.999)}


class ParityStage(Stage):
    name = "parity"

    def cases(self, suite):
        for t in suite.targets:
            if self.name in t.stages and (t.format != "native" or torch_native(t)):
                yield Case(suite, self.name, t.device, t, suite.parity.batch_size, t.format, [t.device, self.name])

    def run(self, case, ctx, res):
        suite = case.suite
        if suite.source.kind == "onnx":
            raise CaseSkipped("the source is an ONNX file: no framework network to compare the export against")
        x = ctx.inputs(suite, case.batch_size)
        if torch_native(case.target):
            return self._torch(case, ctx, res, x)
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

    def _torch(self, case, ctx, res, x):
        suite, t = case.suite, case.target
        ort_cls = get_runner_class("onnxruntime")
        why = why_unavailable(ort_cls, {}, HOST_DEVICE)
        if why:
            raise CaseSkipped(f"the torch runner's parity runs its ONNX export on ONNX Runtime: {why}")
        with ctx.runner(case, res, ctx.target_artifact(case, res)) as runner:
            out = runner.run(x)
        art = ctx.models.torch_onnx(suite, case.batch_size)
        res.metrics["reference_onnx"] = {"path": str(art.path), "sha256": art.sha256}
        with ort_cls(HOST_DEVICE, 0, "fp32", {}) as ort:
            ort.load(art.path, x.shape)
            reference = ort.run(x)
        tol, cos = suite.parity.max_abs_diff_rel, suite.parity.min_cosine
        if t.precision in REDUCED:
            tol, cos = max(tol, REDUCED[t.precision][0]), min(cos, REDUCED[t.precision][1])
        p = compare_outputs(reference, out, max_abs_diff_rel=tol, min_cosine=cos)
        res.metrics.update(p.as_metrics())
        res.reason = (f"torch ({t.precision}, {t.device}) vs its ONNX export on ONNX Runtime CPU (fp32): {p.reason}"
                      + (f"; bounds for {t.precision}: max|diff|/scale {tol:g}, cosine {cos:g}"
                         if t.precision in REDUCED else ""))
        if not p.passed:
            raise CaseFailed(res.reason)
