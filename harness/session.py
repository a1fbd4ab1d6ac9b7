"""Executes planned cases: artifact -> runner -> measurement -> result -> store.

One HarnessSession per pytest (or CLI) run. Networks and artifacts are made
lazily and memoised, so `-m throughput` alone still exports what it needs,
and every case turns into exactly one stored Result, whatever happens.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path

import numpy as np

from harness import data, env
from harness.artifacts import Artifact, ArtifactCache, sha256_file
from harness.devices import detect
from harness.errors import UserError
from harness.gates import hold
from harness.metrics import TopK, compare_outputs
from harness.plan import Case, runner_class_for
from harness.results import Result
from harness.runners import get_runner_class
from harness.store import Store
from harness.suite import Suite
from harness.timing import TimingConfig, measure


class Skip(Exception):
    """A case that cannot run here; the message says what is missing."""


class Fail(Exception):
    """A case that ran and missed its tolerance."""


class HarnessSession:
    def __init__(self, *, store: str | Path | None = None, cache: str | Path | None = None,
                 baselines: str | Path | None = None, timing_override: dict | None = None,
                 argv: list[str] | None = None, baselines_file=None):
        self.store = Store(store)
        self.run_id = self.store.begin_run(env.capture(), argv)
        self.cache = ArtifactCache(cache)
        self.baselines_path = Path(baselines) if baselines else None
        self._baselines = baselines_file  # already loaded from `baselines` (the plugin validates it first)
        self.timing_override = {k: v for k, v in (timing_override or {}).items() if v is not None}
        self._nets: dict[Path, object] = {}
        self._artifacts: dict[tuple, Artifact] = {}
        self._pool: dict[Path, np.ndarray] = {}
        self._om_source: dict[Path, str] = {}  # OM -> sha256 of the ONNX it was converted from
        self.status = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}

    # -- shared inputs ------------------------------------------------------
    @property
    def baselines(self):
        if self._baselines is None and self.baselines_path is not None:
            from harness.baselines import load_baselines

            self._baselines = load_baselines(self.baselines_path)
        return self._baselines

    def recipe(self, suite: Suite) -> data.Recipe:
        return data.get_recipe(suite.input.preprocess, suite.input.size)

    def inputs(self, suite: Suite, batch_size: int) -> np.ndarray:
        """A batch of preprocessed generated images (content does not change the
        compute of these networks, but realistic value ranges keep fp16 honest)."""
        pool = self._pool.get(suite.path)
        if pool is None:
            n = 8
            samples = data.synthetic_dataset(n, suite.source.num_classes, seed=suite.dataset.seed)
            recipe = self.recipe(suite)
            pool = np.stack([recipe(s.open()) for s in samples])
            self._pool[suite.path] = pool
        reps = -(-batch_size // len(pool))
        return np.ascontiguousarray(np.concatenate([pool] * reps)[:batch_size])

    def network(self, suite: Suite, device_target: str = "CPU"):
        if suite.source.kind == "pytorch":  # the timm model itself (parity reference for its export)
            net = self._nets.get(suite.path)
            if net is None:
                from harness import torch_source

                net = torch_source.build_model(suite.source.arch, suite.source.num_classes,
                                               suite.resolve(suite.source.checkpoint), seed=suite.source.seed)
                self._nets[suite.path] = net
            return net
        if suite.source.kind != "mindcv":
            raise Skip(f"source.kind is {suite.source.kind!r}: there is no framework network to run")
        net = self._nets.get(suite.path)
        if net is None:
            from harness import networks

            networks.set_context(device_target)
            net = networks.build_network(suite.source.arch, suite.source.num_classes, seed=suite.source.seed)
            ckpt = suite.resolve(suite.source.checkpoint)
            if ckpt is not None:
                networks.load_checkpoint(net, ckpt)
            elif suite.source.init == "scaled":
                networks.reinit_well_scaled(net, suite.source.seed)
            self._nets[suite.path] = net
        return net

    def artifact(self, suite: Suite, fmt: str, batch_size: int, device: str | None = None) -> Artifact:
        memo = (suite.path, fmt, batch_size)
        if memo in self._artifacts:
            return self._artifacts[memo]
        shape = (batch_size, suite.input.channels, suite.input.size, suite.input.size)
        if suite.source.kind == "onnx":
            if fmt != "onnx":
                if fmt == "om":
                    return self._om(suite, batch_size, device)
                raise Skip(f"cannot make {fmt} from an ONNX source")
            path = suite.resolve(suite.source.path)
            if not path.is_file():
                raise UserError("ONNX model not found", path=path, fix="fix source.path in the suite")
            art = Artifact("onnx", path, sha256_file(path), batch_size, None, cached=True)
        elif suite.source.kind == "pytorch" and fmt == "onnx":
            # one dynamic-batch file serves every batch size
            key = self.cache.key(suite, f"onnx:pytorch:{suite.source.opset}:dynamic", 0)
            path = self.cache.lookup(key, "onnx")
            if path is not None:
                art = Artifact("onnx", path, self.cache.meta(path)["sha256"], batch_size, None, cached=True)
            else:
                from harness import torch_source

                model = self.network(suite)
                t0 = time.perf_counter()
                path, sha = self.cache.store(
                    key, "onnx", lambda tmp: torch_source.export_onnx(model, tmp, suite.input.size,
                                                                      opset=suite.source.opset,
                                                                      channels=suite.input.channels),
                    {"suite": str(suite.path), "arch": suite.source.arch, "source": "pytorch",
                     "opset": suite.source.opset, "dynamic_batch": True})
                art = Artifact("onnx", path, sha, batch_size, time.perf_counter() - t0, cached=False)
        elif suite.source.kind == "pytorch" and fmt != "om":
            raise Skip(f"cannot make {fmt} from a PyTorch source (it exports ONNX; OM is converted from that)")
        elif fmt == "om":
            return self._om(suite, batch_size, device)
        else:
            key = self.cache.key(suite, fmt, batch_size)
            path = self.cache.lookup(key, fmt)
            if path is not None:
                meta = self.cache.meta(path)
                art = Artifact(fmt, path, meta["sha256"], batch_size, None, cached=True)
            else:
                from harness import networks

                net = self.network(suite)
                t0 = time.perf_counter()
                path, sha = self.cache.store(
                    key, fmt, lambda tmp: networks.export(net, shape, fmt.upper(), tmp),
                    {"suite": str(suite.path), "arch": suite.source.arch, "shape": shape})
                art = Artifact(fmt, path, sha, batch_size, time.perf_counter() - t0, cached=False)
        self._artifacts[memo] = art
        return art

    def _om(self, suite: Suite, batch_size: int, device: str | None, gears: list[int] | None = None) -> Artifact:
        """A static OM for one batch size, or (with gears) one dynamic-batch OM,
        converted by atc for the SoC npu-smi reports; cached beside the ONNX
        artifacts, its atc command recorded with it."""
        from harness import atc

        present = detect()
        chips = present.chips(device or "")
        if not chips:
            raise Skip(present.why_absent.get(device or "ascend310", "no Ascend device"))
        soc = atc.soc_version(chips[0])
        memo = (suite.path, "om", tuple(gears) if gears else batch_size, soc)
        if memo in self._artifacts:
            return self._artifacts[memo]
        onnx_art = self.artifact(suite, "onnx", gears[0] if gears else batch_size)
        label = f"dyn{'-'.join(map(str, gears))}" if gears else f"bs{batch_size}"
        stem = self.cache.root / "om" / f"{onnx_art.sha256[:16]}_{soc}_{label}"
        stem.parent.mkdir(parents=True, exist_ok=True)
        shape = (batch_size, suite.input.channels, suite.input.size, suite.input.size)
        cmd = atc.build_command(onnx_art.path, stem, atc.onnx_input_name(onnx_art.path), shape, soc,
                                dynamic_batches=gears)
        om = atc.om_path(stem)
        t0 = time.perf_counter()
        cached = om.is_file()
        if not cached:
            om = atc.convert(cmd, stem)
        command = (atc.recorded_command(stem) if cached else None) or " ".join(cmd)
        art = Artifact("om", om, sha256_file(om), batch_size, None if cached else time.perf_counter() - t0,
                       cached, command=command)
        self._om_source[om] = onnx_art.sha256
        self._artifacts[memo] = art
        return art

    def timing(self, suite: Suite, target) -> TimingConfig:
        cfg = TimingConfig.from_spec(suite.timing_for(target))
        for k, v in self.timing_override.items():
            setattr(cfg, k, v)
        return cfg

    # -- execution ----------------------------------------------------------
    def execute(self, case: Case) -> Result:
        """Run one case and store its Result (also when it skips or breaks)."""
        res = Result(model=case.suite.model, case=case.name, stage=case.stage, status="passed",
                     device=case.device, batch_size=case.batch_size, run_id=self.run_id,
                     artifact_format=case.format, preprocessing=self.recipe(case.suite).identity)
        if case.target is not None:
            res.target, res.runner, res.precision = case.target.name, case.target.runner, case.target.precision
        try:
            devices = detect()
            wanted = [m for m in case.markers if m in devices.present] or [case.device]
            if not any(devices.present.get(d) for d in wanted):
                raise Skip("; ".join(devices.why_absent.get(d, f"no {d} on this host") for d in wanted))
            if case.target is not None:
                # known before anything loads, so skipped cases carry it too
                res.timing_scope = get_runner_class(case.target.runner).timing_scope
            getattr(self, f"_run_{case.stage}")(case, res)
        except Skip as exc:
            res.status, res.reason = "skipped", str(exc)
        except Fail as exc:
            res.status, res.reason = "failed", str(exc)
        except UserError as exc:
            res.status, res.reason = "error", str(exc)
        except Exception as exc:  # recorded as data; the run goes on
            res.status = "error"
            res.reason = f"{type(exc).__name__}: {exc}"
            res.metrics["traceback"] = traceback.format_exc(limit=8)
        self.store.add(res)
        self.status[res.status] += 1
        return res

    def _runner(self, case: Case, res: Result, artifact):
        t = case.target
        try:
            cls = runner_class_for(t)
        except UserError as exc:
            raise UserError(str(exc), path=case.suite.path) from None
        opts = dict(t.options)
        opts.setdefault("num_classes", case.suite.source.num_classes)
        if getattr(t, "dynamic_batch", None):
            opts["dynamic_batch"] = True
        from harness.devices import device_model

        res.metrics["device_model"] = device_model(t.device)
        runner = cls(t.device, t.device_id, t.precision, opts)
        shape = (case.batch_size, case.suite.input.channels, case.suite.input.size, case.suite.input.size)
        runner.load(artifact, shape)
        res.runner_version = runner.version()
        res.timing_scope = runner.timing_scope
        return runner

    def _target_artifact(self, case: Case, res: Result):
        if case.format == "native":
            res.artifact_sha256 = None
            if case.target is not None and case.target.runner == "mindspore":
                from harness.runners.mindspore import DEVICE_TARGET

                return self.network(case.suite, DEVICE_TARGET.get(case.device, "CPU"))
            return self.network(case.suite)
        gears = getattr(case.target, "dynamic_batch", None) if case.target is not None else None
        if case.format == "om" and gears:
            gears = case.target.batch_sizes if gears is True else gears
            art = self._om(case.suite, case.batch_size, case.device, gears=list(gears))
        else:
            art = self.artifact(case.suite, case.format, case.batch_size, case.device)
        res.artifact_sha256 = art.sha256
        if art.command:
            res.metrics["artifact_command"] = art.command
        if art.path in self._om_source:
            res.metrics["source_sha256"] = self._om_source[art.path]
        return art.path

    def _run_export(self, case: Case, res: Result):
        suite = case.suite
        sizes = sorted({suite.parity.batch_size} | {
            b for t in suite.targets if t.format == case.format for b in t.batch_sizes})
        if case.format == "om":
            # OM conversion happens per target device when its cases run.
            raise Skip("OM files are converted per Ascend target by its cases (atc on the CANN host)")
        per_batch = {}
        for b in sizes:
            art = self.artifact(suite, case.format, b)
            per_batch[str(b)] = {"sha256": art.sha256, "export_s": art.export_s, "cached": art.cached,
                                 "bytes": art.path.stat().st_size}
        first = per_batch[str(sizes[0])]
        res.artifact_sha256 = first["sha256"]
        res.metrics = {"batch_sizes": sizes, "artifacts": per_batch}
        res.reason = f"{len(sizes)} {case.format} file(s), " + (
            "all from cache" if all(v["cached"] for v in per_batch.values()) else "exported")

    def _run_parity(self, case: Case, res: Result):
        suite = case.suite
        if suite.source.kind == "onnx":
            raise Skip("the source is an ONNX file: no framework network to compare the export against")
        from harness import networks

        x = self.inputs(suite, case.batch_size)
        reference = networks.predict(self.network(suite), x)
        with self._runner(case, res, self._target_artifact(case, res)) as runner:
            out = runner.run(x)
        p = compare_outputs(reference, out, max_abs_diff_rel=suite.parity.max_abs_diff_rel,
                            min_cosine=suite.parity.min_cosine)
        res.metrics.update(p.as_metrics())
        res.reason = f"{case.format} on {case.target.runner} vs MindSpore: {p.reason}"
        if not p.passed:
            raise Fail(res.reason)

    def _run_throughput(self, case: Case, res: Result):
        suite = case.suite
        x = self.inputs(suite, case.batch_size)
        with self._runner(case, res, self._target_artifact(case, res)) as runner:
            timing = measure(runner, x, self.timing(suite, case.target))
        res.metrics.update(timing.as_metrics())
        res.reason = (f"{timing.throughput_ips:.2f} img/s, p50 {timing.latency_ms_p50:.2f} ms, "
                      f"cv {100 * timing.cv:.1f}%")
        if timing.unstable:
            res.reason += " (unstable: cv >= 10%)"
        if timing.truncated:
            res.reason += f" (stopped at max_duration_s after {timing.iterations} iterations)"
        self._hold_baselines(case, res, "throughput_ips", timing.throughput_ips)

    def _hold_baselines(self, case: Case, res: Result, metric: str, value: float):
        if self.baselines is None:
            return
        from harness.baselines import select

        found = select(self.baselines, model=case.suite.model, metric=metric, device=case.device,
                       batch_size=case.batch_size)
        # A figure measured on a named device model (e.g. a T4) only applies
        # to that model.
        here = detect().details.get(case.device, "").lower()
        found = [b for b in found if not b.device_model or b.device_model.lower() in here]
        if not found:
            return
        verdicts = [hold(value, b, timing_scope=res.timing_scope) for b in found]
        res.baseline = verdicts[0] if len(verdicts) == 1 else {"all": verdicts}
        failed = [v for v in verdicts if v["verdict"] == "fail"]
        if failed:
            raise Fail("; ".join(v["reason"] for v in failed))

    def dataset(self, suite: Suite):
        """The suite's labelled images (harness.datasets.Dataset), subset applied and recorded."""
        from harness import datasets

        spec = suite.dataset
        root = suite.resolve(spec.path)
        if spec.kind == "flat":
            ds = datasets.flat_folder(root, suite.resolve(spec.label_file), allow_missing=spec.allow_missing)
        else:
            ds = datasets.image_folder(root, num_classes=suite.source.num_classes)
        if spec.subset is not None:
            ds = datasets.take_subset(ds, first=spec.subset.first, per_class=spec.subset.per_class,
                                      seed=spec.subset.seed)
        elif "num_images" in spec.model_fields_set:
            ds = datasets.take_subset(ds, first=spec.num_images)
        return ds

    def _run_accuracy(self, case: Case, res: Result):
        suite = case.suite
        src = suite.source
        if src.kind in ("mindcv", "pytorch") and not src.checkpoint:
            ids = ", ".join(suite.accuracy_baselines) or "the documented accuracy"
            raise Skip(f"no trained weights: the network is randomly initialised, so its accuracy means nothing. "
                       f"Set source.checkpoint in {suite.path} to a trained .ckpt/.pth and dataset.kind: "
                       f"imagefolder (or flat + label_file) with dataset.path (ImageNet val) to check against {ids}")
        if suite.dataset.kind == "synthetic":
            raise Skip(f"dataset is synthetic (generated images have no true labels); set dataset.kind: imagefolder "
                       f"(or flat + label_file) and dataset.path in {suite.path}")
        ds = self.dataset(suite)
        recipe = self.recipe(suite)
        topk = TopK((1, 5))
        where = f"{case.target.runner} output on {suite.dataset.path}"
        source = None
        if suite.dataset.prep_cache:
            from harness.prep_cache import PrepCache

            cache = PrepCache(self.cache.root / "prep", recipe)
            hits = sum(cache.path(s).is_file() for s in ds.samples)
            res.metrics["prep_cache"] = {"dir": str(cache.dir), "cached": hits, "built": len(ds.samples) - hits}
            # images not cached yet are preprocessed (and stored) as the stream reaches them
            source = _cache_stream(cache, ds.samples)
        from tqdm import tqdm

        with self._runner(case, res, self._target_artifact(case, res)) as runner:
            stream = data.batches(ds.samples, recipe, case.batch_size, on_corrupt=suite.dataset.on_corrupt,
                                  skipped=ds.skipped, workers=suite.dataset.workers, source=source)
            # shown on a terminal only (disable=None): pytest's captured output stays clean
            for x, labels, n in tqdm(stream, total=-(-len(ds.samples) // case.batch_size), unit="batch",
                                     desc=f"{suite.model} {case.name}", disable=None, leave=False):
                topk.update(runner.run(x)[:n], labels, where=where)
        res.metrics.update(topk.result())
        res.metrics["dataset"] = ds.completeness(topk.count)
        res.metrics["preprocessing_golden_sha256"] = recipe.golden_sha256
        expected = suite.dataset.expected_images
        incomplete = expected is not None and topk.count != expected
        summary = ds.summary(topk.count) + (f"; expected {expected}" if incomplete else "")
        res.reason = f"top1 {res.metrics['top1']:.3f}%, top5 {res.metrics['top5']:.3f}% ({summary})"
        if incomplete and suite.dataset.require_complete:
            raise Fail(f"incomplete evaluation: {summary}")
        wanted = case.target.accuracy_baselines if case.target.accuracy_baselines is not None \
            else suite.accuracy_baselines
        if self.baselines is None or not wanted:
            return
        by_id = {b.id: b for b in self.baselines.baselines}
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise UserError(f"accuracy_baselines names unknown ids: {missing}", path=suite.path,
                            fix=f"use ids from {self.baselines_path}")
        from harness.gates import hold_mlperf

        rule = suite.accuracy_rule
        verdicts = []
        for i in wanted:
            b = by_id[i]
            if rule in ("tolerance", "both"):
                verdicts.append(hold(res.metrics[b.metric], b))
            if rule in ("mlperf", "both"):
                verdicts.append(hold_mlperf(res.metrics[b.metric], b))
        res.baseline = verdicts[0] if len(verdicts) == 1 else {"all": verdicts}
        res.reason += "; " + "; ".join(f"{v['verdict']}: {v['reason']}" for v in verdicts)
        failed = [v for v in verdicts if v["verdict"] == "fail"]
        if failed:
            raise Fail("; ".join(v["reason"] for v in failed))

    def finish(self, interrupted: bool = False) -> None:
        self.store.finish_run(self.run_id, "interrupted" if interrupted else "finished")
        self.store.close()


def _cache_stream(cache, samples):
    """The cache's (sample, array) stream, with an unreadable image passed on as
    its error (as data.batches expects) instead of ending the stream."""
    for s in samples:
        try:
            yield from cache.stream([s])
        except UserError as exc:
            yield s, exc
