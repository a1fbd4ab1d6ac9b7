"""Bringing results from elsewhere into the store.

- another host's store (a results SQLite file) or a bundle file written by
  `harness bundle` (JSON: its runs and results): merged without duplicates,
  each run keeping its own environment (host, devices), so cross-device
  claims can be evaluated from figures measured on different machines;
- ais_bench results of runs made by hand (device scope): its `*_summary.json`
  or its console log, of any release (harness.runners.ais_bench_io);
- saved trtexec logs (TensorRT, device scope: 1000 x batch / GPU Compute Time
  mean), one result per run in the log (a sweep holds several);
- the documents' published throughput tables (baselines.yaml), stored as
  results with `metrics.origin: "published"`, so reports can set measured
  figures beside published ones.

Imported ais_bench and published runs get the run status "imported" (not
"finished"), so history gates never take them as a run of this harness.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import re
from datetime import datetime, timezone
from pathlib import Path

from harness.config.baselines import load_baselines
from harness.errors import UserError
from harness.fsio import write_text
from harness.models.cache import sha256_file
from harness.results import Result
from harness.results.store import Store
from harness.runners import ais_bench_io as out
from harness.runners import trtexec_io
from harness.runners.trtexec import run_metrics

BUNDLE_FORMAT = "harness-results-bundle"
BUNDLE_VERSION = 1
_FIELDS = {f.name for f in dataclasses.fields(Result)}
# what tells an ais_bench console log (every release) from other text
_AIS_BENCH_LOG = re.compile(r"NPU_compute_time|throughput\s*\(?\s*1000|summary throughput:", re.IGNORECASE)


@dataclasses.dataclass
class ImportReport:
    runs_added: int = 0
    results_added: int = 0
    results_skipped: int = 0  # already in the store

    def __str__(self):
        return (f"{self.results_added} result(s) added in {self.runs_added} new run(s), "
                f"{self.results_skipped} already present")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _result(record: dict, where) -> Result:
    unknown = set(record) - _FIELDS
    if unknown:
        raise UserError(f"result with fields this harness does not know: {sorted(unknown)}", path=where,
                        fix="upgrade the harness to import results written by a newer one")
    try:
        return Result(**record)
    except (TypeError, ValueError) as exc:
        raise UserError(f"malformed result record: {exc}", path=where) from None


def _add_all(store: Store, runs: list[dict], results: list[Result]) -> ImportReport:
    rep = ImportReport()
    for run in runs:
        rep.runs_added += store.add_run(run)
    for r in results:
        if store.has_result(r):
            rep.results_skipped += 1
        else:
            store.add(r)
            rep.results_added += 1
    return rep


# -- other stores and bundles -----------------------------------------------
def bundle(store: Store) -> dict:
    return {"format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION, "written_at": _now(),
            "runs": store.runs(), "results": [r.to_dict() for r in store.results()]}


def write_bundle(store: Store, out: str | Path) -> Path:
    out = Path(out)
    if out.exists():
        raise UserError("file already exists", path=out, fix="choose another --out or remove the file")
    write_text(out, json.dumps(bundle(store), indent=1, default=str))
    return out


def merge_bundle(store: Store, doc: dict, *, where="bundle") -> ImportReport:
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
        raise UserError("not a harness results bundle (no \"format\": \"harness-results-bundle\")", path=where,
                        fix="write one with `harness bundle --out FILE` on the other host")
    if int(doc.get("format_version", 0)) > BUNDLE_VERSION:
        raise UserError(f"bundle format version {doc['format_version']}; this harness reads up to "
                        f"{BUNDLE_VERSION}", path=where, fix="upgrade the harness")
    runs = doc.get("runs") or []
    for i, run in enumerate(runs):
        if not isinstance(run, dict) or not run.get("run_id") or not run.get("started_at"):
            raise UserError(f"runs[{i}] lacks run_id or started_at", path=where)
    results = [_result(r, where) for r in doc.get("results") or []]
    known = {r["run_id"] for r in runs} | {r["run_id"] for r in store.runs()}
    orphans = {r.run_id for r in results} - known
    if orphans:
        raise UserError(f"results of runs the bundle does not describe: {sorted(orphans)[:3]}", path=where)
    return _add_all(store, runs, results)


def merge_store(store: Store, other: str | Path) -> ImportReport:
    other = Path(other)
    if store.path is not None and other.resolve() == store.path.resolve():
        raise UserError("cannot import a store into itself", path=other)
    src = Store(other, read_only=True)
    try:
        doc = bundle(src)
    finally:
        src.close()
    return merge_bundle(store, doc, where=other)


# -- ais_bench summaries -------------------------------------------------------
def ais_bench_result(summary_path: str | Path, *, model: str, device: str, batch_size: int | None = None,
                     device_model: str | None = None, artifact_sha256: str | None = None,
                     source_sha256: str | None = None, preprocessing: str | None = None,
                     precision: str | None = None, runner_version: str | None = None,
                     run_id: str) -> Result:
    s = out.read_summary(summary_path, batch_size=batch_size)
    b = batch_size or (int(s.batch_size) if s.batch_size else None)
    if not b:
        raise UserError("the file names no batch size (no --batchsize/--dymBatch in the summary's args, no "
                        "batch in the throughput line)", path=summary_path,
                        fix="pass --batch-size (the batch the OM was converted for)")
    if artifact_sha256 is None:
        om = s.args.get("model")
        if om and Path(om).is_file():
            artifact_sha256 = sha256_file(Path(om))
    metrics = s.as_metrics(b)
    if metrics.get("throughput_ips") is None:
        raise UserError("no throughput in the summary and no NPU compute time to derive it from",
                        path=summary_path)
    metrics.update(origin="measured", imported_from=str(Path(summary_path).resolve()), device_model=device_model,
                   source_sha256=source_sha256, ais_bench_args=s.args, ais_bench_variant=s.variant,
                   ais_bench_warnings=s.warnings or None)
    metrics = {k: v for k, v in metrics.items() if v is not None}
    return Result(model=model, case=f"throughput[imported-ais_bench-{device}-bs{b}]", stage="throughput",
                  status="passed", device=device, target="imported-ais_bench", runner="ais_bench",
                  runner_version=runner_version or "unknown", batch_size=b, precision=precision,
                  timing_scope="device", artifact_sha256=artifact_sha256, artifact_format="om",
                  preprocessing=preprocessing, metrics=metrics,
                  reason=f"{metrics['throughput_ips']:.2f} img/s (ais_bench, imported)", run_id=run_id)


def _content_run_id(tool: str, files: list[str | Path], options: dict) -> str:
    """An imported run's id from its files' bytes and the options given: importing them again adds nothing."""
    h = hashlib.sha256()
    for p in files:
        try:
            h.update(Path(p).read_bytes())
        except OSError as exc:
            raise UserError(f"cannot read: {exc.strerror}", path=p) from None
    h.update(json.dumps(options, sort_keys=True, default=str).encode())
    return f"import-{tool}-{h.hexdigest()[:12]}"


def import_ais_bench(store: Store, summaries: list[str | Path], *, host: str | None = None, **kw) -> ImportReport:
    """One imported run holding one throughput result per summary file. The
    run id is derived from the files' contents, so importing them again adds
    nothing."""
    run_id = _content_run_id("ais_bench", summaries, kw)
    created = _now()
    results = [ais_bench_result(p, run_id=run_id, **kw) for p in summaries]
    for r in results:
        r.created_at = created
    if store.add_run({"run_id": run_id, "started_at": created, "finished_at": created, "status": "imported",
                      "argv": ["harness", "import", *map(str, summaries)],
                      "env": {"hostname": host or "unknown (imported ais_bench summary)",
                              "imported_by": platform.node(), "devices": {kw.get("device", "?"): True},
                              "device_details": {kw.get("device", "?"): kw.get("device_model") or ""}}}) is False:
        return ImportReport(results_skipped=len(results))
    return _add_all(store, [], results)


# -- trtexec logs -----------------------------------------------------------------
_TRTEXEC_PRECISION = (("--int8", "int8"), ("--best", "mixed"), ("--fp16", "fp16"))


def trtexec_results(log_path: str | Path, *, model: str, device: str, batch_size: int | None = None,
                    device_model: str | None = None, source_sha256: str | None = None,
                    preprocessing: str | None = None, precision: str | None = None, run_id: str) -> list[Result]:
    """One throughput Result per run in a saved trtexec log."""
    p = Path(log_path)
    text = p.read_text(encoding="utf-8", errors="replace")
    runs = trtexec_io.parse_trtexec_runs(text, batch_size, where=str(p))
    if not runs:
        trtexec_io.parse_trtexec_log(text, batch_size, where=str(p))  # raises, naming the file
    out_ = []
    for r in runs:
        b = r["batch_size"]
        if not b or not r["throughput_ips"]:
            raise UserError("the trtexec log names no batch size (no --shapes, --batch or input shape)", path=p,
                            fix="pass --batch-size (the batch of one inference)")
        onnx = r["options"].get("onnx")
        src = source_sha256
        if src is None and isinstance(onnx, str) and Path(onnx).is_file():
            src = sha256_file(Path(onnx))
        prec = precision or next((name for flag, name in _TRTEXEC_PRECISION if flag in r["precision_flags"]),
                                 "fp32" if r["command"] else None)
        gct = r["gpu_compute_time_ms"]
        metrics = {"throughput_ips": r["throughput_ips"], "latency_ms_mean": gct.get("mean"),
                   "latency_ms_min": gct.get("min"), "latency_ms_max": gct.get("max"),
                   "latency_ms_p50": gct.get("median"), "latency_ms_p90": gct.get("p90"),
                   "latency_ms_p99": gct.get("p99"), **run_metrics(r), "origin": "measured",
                   "imported_from": str(p.resolve()), "source_sha256": src,
                   "device_model": device_model or r.get("gpu_model")}
        metrics = {k: v for k, v in metrics.items() if v is not None}
        out_.append(Result(
            model=model, case=f"throughput[imported-trtexec-{device}-bs{b}]", stage="throughput", status="passed",
            device=device, target="imported-trtexec", runner="trtexec",
            runner_version=f"TensorRT {r['tensorrt_version'] or 'unknown'}", batch_size=b, precision=prec,
            timing_scope="device", artifact_sha256=src, artifact_format="onnx", preprocessing=preprocessing,
            metrics=metrics, reason=f"{r['throughput_ips']:.2f} img/s (trtexec GPU Compute Time, imported)",
            run_id=run_id))
    return out_


def import_trtexec(store: Store, logs: list[str | Path], *, host: str | None = None, **kw) -> ImportReport:
    """One imported run holding the throughput results of saved trtexec logs;
    its id comes from the logs' contents, so importing them again adds nothing."""
    run_id = _content_run_id("trtexec", logs, kw)
    created = _now()
    results = [r for p in logs for r in trtexec_results(p, run_id=run_id, **kw)]
    for r in results:
        r.created_at = created
    gpu = kw.get("device_model") or next((r.metrics.get("device_model") for r in results), "")
    if store.add_run({"run_id": run_id, "started_at": created, "finished_at": created, "status": "imported",
                      "argv": ["harness", "import", *map(str, logs)],
                      "env": {"hostname": host or "unknown (imported trtexec log)", "imported_by": platform.node(),
                              "devices": {kw.get("device", "?"): True},
                              "device_details": {kw.get("device", "?"): gpu or ""}}}) is False:
        return ImportReport(results_skipped=len(results))
    rep = _add_all(store, [], results)
    rep.runs_added = 1
    return rep


def looks_like_trtexec(text: str) -> bool:
    return "TensorRT.trtexec" in text or bool(trtexec_io.parse_trtexec_runs(text))


# -- published tables -----------------------------------------------------------
def published_results(bf, *, run_id: str, created_at: str) -> list[Result]:
    """Every per-batch throughput figure of the baselines file as a Result."""
    out = []
    for b in bf.baselines:
        if b.metric != "throughput_ips" or b.batch_size is None:
            continue
        dev = f"{b.device}-{b.device_model}" if b.device_model else b.device
        out.append(Result(
            model=b.model, case=f"throughput[published-{dev}-bs{b.batch_size}]", stage="throughput",
            status="passed", device=b.device, target="published", runner=b.runner, batch_size=b.batch_size,
            precision=b.precision, timing_scope=b.timing_scope,
            metrics={"throughput_ips": b.value, "origin": "published", "baseline_id": b.id,
                     "device_model": b.device_model, "weights": b.weights,
                     "source": {"document": b.source.document, "section": b.source.section}},
            reason=f"published: {b.value:g} {b.unit} ({b.source.document} / {b.source.section})",
            run_id=run_id, created_at=created_at))
    return out


def import_published(store: Store, baselines_path: str | Path) -> ImportReport:
    """The published throughput tables as one imported run per baselines file
    content (re-importing the same file adds nothing)."""
    p = Path(baselines_path)
    bf = load_baselines(p)
    digest = hashlib.sha256(p.read_bytes()).hexdigest()[:12]
    run_id = f"published-{digest}"
    created = _now()
    results = published_results(bf, run_id=run_id, created_at=created)
    if not results:
        raise UserError("the baselines file holds no per-batch throughput figures", path=p)
    docs = sorted({r.metrics["source"]["document"] for r in results})
    if not store.add_run({"run_id": run_id, "started_at": created, "finished_at": created, "status": "imported",
                          "argv": ["harness", "import", "--published", str(p)],
                          "env": {"hostname": "published", "origin": "published", "documents": docs,
                                  "baselines_sha256": digest}}):
        return ImportReport(results_skipped=len(results))
    return _add_all(store, [], results)


def sniff(path: str | Path) -> str:
    """What a file to import is: "store", "bundle" or "ais_bench"."""
    p = Path(path)
    if not p.is_file():
        raise UserError("no such file", path=p, fix="pass a results store, a bundle JSON or an ais_bench summary")
    with open(p, "rb") as fh:
        head = fh.read(16)
    if head == b"SQLite format 3\x00":
        return "store"
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError("neither a results store nor text", path=p,
                        fix="pass a results store (.sqlite), a `harness bundle` file, an ais_bench "
                            "*_summary.json or console log, or a saved trtexec log") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        if looks_like_trtexec(text):
            return "trtexec"
        if _AIS_BENCH_LOG.search(text):
            return "ais_bench"
        raise UserError("neither a results store, JSON, an ais_bench console log (no NPU_compute_time "
                        "statistics, throughput line or summary throughput) nor a trtexec log", path=p,
                        fix="pass a results store (.sqlite), a `harness bundle` file, an ais_bench "
                            "*_summary.json or console log, or a saved trtexec log") from None
    if isinstance(doc, dict) and doc.get("format") == BUNDLE_FORMAT:
        return "bundle"
    if isinstance(doc, dict) and "NPU_compute_time" in doc:
        return "ais_bench"
    raise UserError("JSON that is neither a harness bundle nor an ais_bench summary", path=p,
                    fix="pass a `harness bundle` file or an ais_bench *_summary.json")
