"""Bringing results from elsewhere into the store.

- another host's store (a results SQLite file) or a bundle file written by
  `harness bundle` (JSON: its runs and results): merged without duplicates,
  each run keeping its own environment (host, devices), so cross-device
  claims can be evaluated from figures measured on different machines;
- ais_bench `*_summary.json` files from runs made by hand (device scope);
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
from datetime import datetime, timezone
from pathlib import Path

from harness.config.baselines import load_baselines
from harness.errors import UserError
from harness.models.cache import sha256_file
from harness.results import Result
from harness.results.store import Store
from harness.runners import ais_bench_io as out

BUNDLE_FORMAT = "harness-results-bundle"
BUNDLE_VERSION = 1
_FIELDS = {f.name for f in dataclasses.fields(Result)}


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
    out.write_text(json.dumps(bundle(store), indent=1, default=str), encoding="utf-8")
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
    s = out.parse_summary_json(summary_path)
    b = batch_size or (int(s.batch_size) if s.batch_size else None)
    if not b:
        raise UserError("the summary's args name no batch size", path=summary_path,
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
                   source_sha256=source_sha256, ais_bench_args=s.args)
    metrics = {k: v for k, v in metrics.items() if v is not None}
    return Result(model=model, case=f"throughput[imported-ais_bench-{device}-bs{b}]", stage="throughput",
                  status="passed", device=device, target="imported-ais_bench", runner="ais_bench",
                  runner_version=runner_version or "unknown", batch_size=b, precision=precision,
                  timing_scope="device", artifact_sha256=artifact_sha256, artifact_format="om",
                  preprocessing=preprocessing, metrics=metrics,
                  reason=f"{metrics['throughput_ips']:.2f} img/s (ais_bench, imported)", run_id=run_id)


def import_ais_bench(store: Store, summaries: list[str | Path], *, host: str | None = None, **kw) -> ImportReport:
    """One imported run holding one throughput result per summary file. The
    run id is derived from the files' contents, so importing them again adds
    nothing."""
    h = hashlib.sha256()
    for p in summaries:
        try:
            h.update(Path(p).read_bytes())
        except OSError as exc:
            raise UserError(f"cannot read: {exc.strerror}", path=p) from None
    h.update(json.dumps(kw, sort_keys=True, default=str).encode())
    run_id = f"import-ais_bench-{h.hexdigest()[:12]}"
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
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError("neither a results store nor JSON", path=p,
                        fix="pass a results store (.sqlite), a `harness bundle` file or an ais_bench "
                            "*_summary.json") from None
    if isinstance(doc, dict) and doc.get("format") == BUNDLE_FORMAT:
        return "bundle"
    if isinstance(doc, dict) and "NPU_compute_time" in doc:
        return "ais_bench"
    raise UserError("JSON that is neither a harness bundle nor an ais_bench summary", path=p,
                    fix="pass a `harness bundle` file or an ais_bench *_summary.json")
