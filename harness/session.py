"""Runs planned cases: device check -> stage -> result -> store. Nothing else.

One HarnessSession per pytest (or CLI) run. What a case measures is its
stage's business (:mod:`harness.stages`); what a stage may use (models,
artifacts, runners, inputs, baselines) is the StageContext made here once.
Every case turns into exactly one stored Result, whatever happens.
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path

from harness.config.baselines import load_baselines
from harness.errors import CaseFailed, CaseSkipped, UserError
from harness.models.cache import ArtifactCache, sha256_file
from harness.models.provider import ModelProvider
from harness.results import Result, provenance
from harness.results.journal import Journal, journal_dir, replay
from harness.results.store import Store, StoreUnavailable
from harness.runners import devices, get_runner_class, why_unavailable
from harness.stages import Case, StageContext, get_stage, stages
from harness.vocab import HOST_DEVICE


def _measured(r: Result) -> bool:
    return r.status in ("passed", "failed") and r.stage != "export"


def unmeasured(results: list[Result], required: list[str] = ()) -> tuple[list[str], list[str]]:
    """(one line per device family present on this host whose cases in this run all
    skipped or broke, the required families among them or with no case measured at all).
    A family present here but deselected (no case of it ran) gets no line unless required."""
    report = devices.detect()
    lines, unmet = [], []
    for fam in dict.fromkeys([*(r.device for r in results), *required]):
        mine = [r for r in results if r.device == fam]
        if any(_measured(r) for r in mine):
            continue
        label = devices.LABEL.get(fam, fam)
        counts = ", ".join(f"{sum(r.status == k for r in mine)} {k}" for k in ("skipped", "error")
                           if any(r.status == k for r in mine))
        first = next((r.reason.splitlines()[0] for r in mine if r.reason), "")
        if report.present.get(fam):
            lines.append(f"{label} is on this host ({devices.device_model(fam, report)}) but this run measured "
                         f"nothing on it: {len(mine)} case(s), {counts or 'none ran'}" + (f"; first: {first}" if first
                                                                                           else ""))
        elif fam in required:
            lines.append(f"{label} was required (--require {fam}) but is absent: {_why_absent(fam)}")
        if fam in required:
            unmet.append(fam)
    return lines, unmet


def _why_absent(family: str) -> str:
    return devices.detect().why_absent.get(family, f"no {family} on this host")


class HarnessSession:
    def __init__(self, *, store: str | Path | None = None, cache: str | Path | None = None,
                 baselines: str | Path | None = None, timing_override: dict | None = None,
                 argv: list[str] | None = None, baselines_file=None, env_extra: dict | None = None,
                 run_id: str | None = None, workers: int = 1, pinned: dict[str, int] | None = None,
                 scenario: str | None = None, notify=None):
        """run_id: join this run (pytest-xdist workers share one; the controller
        finishes it). workers: how many processes measure this run at once.
        pinned: {family: device index} this process was given. notify: where
        the store says it is waiting for a lock (default stderr)."""
        self.store = Store(store, **({"notify": notify} if notify else {}))
        self.journal = Journal(self.store, journal_dir(cache))
        self.notes: list[str] = []
        self.lost: StoreUnavailable | None = None
        self.unstored: list[Result] = []  # measured, not stored: kept in the journal
        try:  # results an earlier run could not store reach the store first, exactly once
            done = replay(self.store, self.journal.root)
            if done:
                self.notes.append(f"replayed {done['added']} kept result(s) into the store "
                                  f"({done['already']} were there already) from {done['journal']}")
        except StoreUnavailable as exc:
            self.notes.append(f"kept results not replayed yet ({exc.message}); they stay in {self.journal.path}")
        env = {**provenance.capture(), "workers": workers}
        if env_extra:
            env = {**env, "extra": env_extra}
        self.joined = run_id is not None
        # a shared run lives as long as its controller (the workers' parent), not one worker
        self.run_id = self.store.begin_run(env, argv, run_id=run_id, pid=os.getppid() if self.joined else None)
        self.pinned = pinned or {}
        self.baselines_path = Path(baselines) if baselines else None
        if baselines_file is None and self.baselines_path is not None:
            baselines_file = load_baselines(self.baselines_path)
        models = ModelProvider(ArtifactCache(cache), chips=lambda fam: devices.detect().chips(fam),
                               why_absent=_why_absent)
        self.context = StageContext(models, baselines=baselines_file, baselines_path=self.baselines_path,
                                    timing_override=timing_override, stages=stages().values())
        self.context.scenario_override = scenario
        self.status = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
        self._suite_hashes: dict = {}
        self.results: list[Result] = []
        self._input_errors: list[Result] = []  # results that stopped on a UserError (the user's input)

    def _suite_sha256(self, path) -> str | None:
        if path not in self._suite_hashes:
            self._suite_hashes[path] = sha256_file(path) if path and Path(path).is_file() else None
        return self._suite_hashes[path]

    @property
    def baselines(self):
        return self.context.baselines

    def execute(self, case: Case) -> Result:
        """Run one case and store its Result (also when it skips or breaks)."""
        res = Result(model=case.suite.model, case=case.name, stage=case.stage, status="passed",
                     device=case.device, batch_size=case.batch_size, run_id=self.run_id,
                     artifact_format=case.format, preprocessing=self.context.recipe(case.suite).identity)
        res.input_size, res.suite_sha256 = case.suite.input.size, self._suite_sha256(case.suite.path)
        if case.target is not None:
            res.target, res.runner, res.precision = case.target.name, case.target.runner, case.target.precision
            if case.device != HOST_DEVICE:
                res.device_index = self.pinned.get(case.device, case.target.device_id)
        # every result names its device model (a T4's figure and an H200's never mix): the GPU as
        # nvidia-smi names it, the NPU chip npu-smi reports, the CPU's model; "absent" where none is
        model = res.metrics["device_model"] = devices.device_model(case.device, index=res.device_index) or "absent"
        started = time.perf_counter()
        try:
            report = devices.detect()
            wanted = [m for m in case.markers if m in report.present] or [case.device]
            missing = [] if any(report.present.get(d) for d in wanted) else \
                [report.why_absent.get(d, f"no {d} on this host") for d in wanted]
            if case.target is not None:
                runner_cls = get_runner_class(case.target.runner)
                # known before anything loads, so skipped cases carry it too
                res.timing_scope = runner_cls.timing_scope
                why = why_unavailable(runner_cls, case.target.options, case.device)
                missing += [why] if why else []
            if missing:
                raise CaseSkipped("; ".join(missing))
            get_stage(case.stage).run(case, self.context, res)
        except CaseSkipped as exc:
            res.status, res.reason = "skipped", str(exc)
        except CaseFailed as exc:
            res.status, res.reason = "failed", str(exc)
        except UserError as exc:
            res.status, res.reason = "error", str(exc)
            self._input_errors.append(res)
        except Exception as exc:  # recorded as data; the run goes on
            res.status = "error"
            res.reason = f"{type(exc).__name__}: {exc}"
            res.metrics["traceback"] = traceback.format_exc(limit=8)
        if not res.metrics.get("device_model"):  # a stage that replaced the metrics keeps it
            res.metrics["device_model"] = model
        # the case's wall time: what `harness run` learns its ETA from
        res.metrics["case_s"] = round(time.perf_counter() - started, 3)
        self._keep(res)
        self.status[res.status] += 1
        self.results.append(res)
        return res

    def _keep(self, res: Result) -> None:
        """Store the result; when the store cannot take it, keep it in the journal
        (fsynced before the case reports), and keep every later one there too."""
        if self.lost is None:
            try:
                self.store.add(res)
                return
            except StoreUnavailable as exc:
                self.lost = exc
        self.journal.keep_result(res)
        self.unstored.append(res)
        self.status["not stored"] = len(self.unstored)

    def not_stored(self, res: Result) -> str | None:
        """'measured, not stored: kept in JOURNAL' when this result is only in the journal."""
        if not any(r is res for r in self.unstored):
            return None
        return f"measured ({res.status}), not stored: kept in {self.journal.path}"

    def input_error(self, res: Result) -> bool:
        """Did this result stop on a problem with the user's input (a UserError)?"""
        return any(r is res for r in self._input_errors)

    def finish(self, interrupted: bool = False) -> str | None:
        """Mark the run finished (interrupted when the run was, or the store went
        away). A worker of a shared run leaves that to the controller unless its
        store went away. Returns a note for the terminal when the mark failed."""
        note, self.marked = None, False
        status = "interrupted" if interrupted else "finished"
        try:
            if self.unstored:
                # once replayed, the run is given the status it ends with now
                self.journal.keep_finish(self.run_id, status if not self.joined else "finished")
                self.marked = self.store.finish_run(self.run_id, "incomplete")
            elif interrupted or not self.joined:
                self.store.finish_run(self.run_id, status)
        except StoreUnavailable:
            note = (f"could not mark run {self.run_id} {'incomplete' if self.unstored else status}: the store "
                    "still cannot be written; it stays 'running', which gates and reports never take as a baseline")
        finally:
            self.store.close()
        return note

    def summary_lines(self) -> list[str]:
        """What the end of a run says about the store, beyond the tables."""
        lines = list(self.notes)
        if self.unstored:
            lines.append(f"NOT STORED: {len(self.unstored)} measured result(s) of run {self.run_id} are kept in "
                         f"{self.journal.path} ({self.lost.message}); run {self.run_id} is "
                         f"{'marked incomplete' if getattr(self, 'marked', False) else 'incomplete'} "
                         "until they are stored. "
                         "They reach the store at the next run, or now with: harness replay"
                         + (f" --store {self.store.location}" if self.store.location else ""))
        return lines


def finish_shared_run(spec, run_id: str, status: str) -> dict:
    """pytest-xdist controller: give the shared run its final status, unless a
    worker already gave it one (interrupted, incomplete). Returns {status,
    results} for the summary, or {note} when the store could not be used."""
    try:
        store = Store(spec, create=False)
    except UserError as exc:
        return {"note": str(exc)}
    try:
        current = next((r["status"] for r in store.runs() if r["run_id"] == run_id), None)
        if current == "running":
            store.finish_run(run_id, status)
        return {"status": current and (status if current == "running" else current), "results": store.count(run_id)}
    except UserError as exc:
        return {"note": str(exc)}
    finally:
        store.close()
