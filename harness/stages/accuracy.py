"""Stage `accuracy`: Top-1/Top-5 on a labelled dataset, held against the documents."""

from __future__ import annotations

from pathlib import Path

from harness.analysis.comparability import Identity
from harness.analysis.verdicts import hold_by_rule
from harness.data import datasets
from harness.data.prep_cache import PrepCache
from harness.data.samples import batches
from harness.errors import CaseFailed, CaseSkipped
from harness.metrics import TopK
from harness.stages.base import Stage
from harness.train import plan as train_plan


class AccuracyStage(Stage):
    name = "accuracy"

    def batch_sizes(self, suite, target):
        return target.batch_sizes[:1]

    def run(self, case, ctx, res):
        suite = case.suite
        src = suite.source
        fed = (suite.stage_config.get("train") and suite.stage_config["train"].feeds) if src.kind != "onnx" else None
        if src.kind in ("mindcv", "pytorch") and not src.checkpoint and not fed:
            ids = ", ".join(suite.accuracy_baselines) or "the documented accuracy"
            raise CaseSkipped(f"no trained weights: the network is randomly initialised, so its accuracy means "
                              f"nothing. Set source.checkpoint in {suite.path} to a trained .ckpt/.pth and "
                              f"dataset.kind: imagefolder (or flat + label_file) with dataset.path (ImageNet val) "
                              f"to check against {ids}; or train it here (train.feeds, train.data on a train split)")
        if suite.dataset.kind == "synthetic":
            raise CaseSkipped(f"dataset is synthetic (generated images have no true labels); set dataset.kind: "
                              f"imagefolder (or flat + label_file) and dataset.path in {suite.path}")
        ctx.check_memory(case)
        ds = datasets.from_spec(suite.dataset, suite.resolve, num_classes=src.num_classes)
        recipe = ctx.recipe(suite)
        topk = TopK((1, 5))
        # the model made the logits: errors about them name the model file, not the images
        where = f"{ctx.model_file(case)} ({case.target.runner} output on {suite.dataset.path})"
        source = None
        if suite.dataset.prep_cache:
            cache = PrepCache(ctx.models.cache.root / "prep", recipe)
            paths = [cache.path(s) for s in ds.samples]
            hits = sum(p.is_file() for p in paths)
            res.metrics["prep_cache"] = {"dir": str(cache.dir), "cached": hits, "built": len(ds.samples) - hits}
            # images not cached yet are preprocessed (and stored) as the stream reaches them
            source = cache.stream(ds.samples, paths)
        from tqdm import tqdm

        with ctx.runner(case, res, ctx.target_artifact(case, res)) as runner:
            stream = batches(ds.samples, recipe, case.batch_size, on_corrupt=suite.dataset.on_corrupt,
                             skipped=ds.skipped, workers=suite.dataset.workers, source=source,
                             processes=suite.dataset.decode_pool == "processes")
            # shown on a terminal only (disable=None): pytest's captured output stays clean
            for x, labels, n in tqdm(stream, total=-(-len(ds.samples) // case.batch_size), unit="batch",
                                     desc=f"{suite.model} {case.name}", disable=None, leave=False):
                topk.update(runner.run(x)[:n], labels, where=where)
        res.metrics.update(topk.result())
        origin = self._weights(case, ctx, res, fed)
        res.metrics["dataset"] = ds.completeness(topk.count)
        res.metrics["preprocessing_golden_sha256"] = recipe.golden_sha256
        expected = suite.dataset.expected_images
        incomplete = expected is not None and topk.count != expected
        summary = ds.summary(topk.count) + (f"; expected {expected}" if incomplete else "")
        res.reason = (f"top1 {res.metrics['top1']:.3f}%, top5 {res.metrics['top5']:.3f}% ({summary}); weights "
                      f"{origin}")
        if incomplete and suite.dataset.require_complete:
            raise CaseFailed(f"incomplete evaluation: {summary}")
        wanted = case.target.accuracy_baselines if case.target.accuracy_baselines is not None \
            else suite.accuracy_baselines
        if res.metrics.get("trained_on_eval"):
            res.reason += "; trained_on_eval: the network was trained on these images, so no baseline is held"
            return
        if ctx.baselines is None or not wanted:
            return
        # held only against baselines of the same weights and preprocessing (else not_comparable)
        measured = Identity(f"{suite.model} ({case.target.name or case.target.device})", None,
                            f"weights:{src.weights}" if src.weights else None, recipe.name)
        verdicts = [v for b in ctx.baselines_by_id(wanted, suite)
                    for v in hold_by_rule(res.metrics[b.metric], b, suite.accuracy_rule, identity=measured)]
        res.reason += "; " + "; ".join(f"{v.verdict}: {v.reason}" for v in verdicts)
        ctx.record(res, verdicts)

    @staticmethod
    def _weights(case, ctx, res, fed) -> str:
        """Train or load, visibly: where the scored weights came from."""
        suite, m = case.suite, res.metrics
        ckpt = ctx.models.checkpoint_of(suite) if suite.source.kind != "onnx" else None
        if fed and ckpt is not None and not suite.source.checkpoint:
            rec = train_plan.trained_record(suite, ctx.models.cache.root) or {}
            m["weights_origin"] = {"trained": {k: rec.get(k) for k in (
                "target", "arch", "recipe", "steps", "batch_size", "image_size", "train_images", "final_loss",
                "checkpoint_sha256")} | {"train_data_sha256": (rec.get("train_data") or {}).get("sha256")}}
            m["loss_curve"] = rec.get("loss_curve", [])
            m["train_data_sha256"] = m["weights_origin"]["trained"]["train_data_sha256"]
            if train_plan.check_overlap(suite):  # allowed (else refused before the run): marked, never judged
                m["trained_on_eval"] = True
            t = m["weights_origin"]["trained"]
            loss = f"{t['final_loss']:.4f}" if t["final_loss"] is not None else "?"
            return (f"trained here ({t['target']}: {t['steps']} steps of {(t['recipe'] or {}).get('optimizer')}, "
                    f"{t['train_images']} images, data {str(t['train_data_sha256'])[:12]}, final loss {loss})")
        path = ckpt or suite.resolve(suite.source.path)
        digest = train_plan.file_sha256(Path(path)) if path is not None and Path(path).is_file() else None
        m["weights_origin"] = {"loaded": {"checkpoint": str(path) if path else None, "sha256": digest}}
        return f"loaded {Path(path).name if path else '?'} (sha256 {str(digest)[:12]})"
