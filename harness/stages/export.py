"""Stage `export`: make the suite's artifacts (ONNX, MINDIR) for every batch size it runs."""

from __future__ import annotations

from harness.errors import CaseSkipped, UserError
from harness.stages.base import Case, Stage
from harness.vocab import HOST_DEVICE, NPU_FAMILIES


class ExportStage(Stage):
    name = "export"

    def cases(self, suite):
        # One case per format, for the whole suite. OM is converted on the
        # Ascend host, so its case is marked with the Ascend families targeted.
        om_devices = sorted({t.device for t in suite.targets if t.format == "om"}) or list(NPU_FAMILIES)
        for fmt in suite.export:
            devices = om_devices if fmt == "om" else [HOST_DEVICE]
            yield Case(suite, "export", devices[0], format=fmt, markers=[*devices, "export"])

    def run(self, case, ctx, res):
        suite = case.suite
        if case.format == "om":
            raise CaseSkipped("OM files are converted per Ascend target by its cases (atc on the CANN host)")
        sizes = sorted({suite.parity.batch_size} | {
            b for t in suite.targets if t.format == case.format for b in t.batch_sizes})
        per_batch, refused = {}, []
        for b in sizes:
            try:  # a batch that cannot fit is skipped; the other sizes are still exported
                ctx.check_memory(case, b, export=True)
            except UserError as exc:
                refused.append(exc)
                continue
            art = ctx.models.artifact(suite, case.format, b)
            per_batch[str(b)] = {"sha256": art.sha256, "export_s": art.export_s, "cached": art.cached,
                                 "bytes": art.path.stat().st_size}
        res.metrics.update(batch_sizes=sizes, artifacts=per_batch)
        if refused:
            done = f"; exported {', '.join(per_batch) or 'no other batch'}"
            raise UserError(refused[0].message + done, path=refused[0].path, fix=refused[0].fix)
        res.artifact_sha256 = per_batch[str(sizes[0])]["sha256"]
        res.reason = f"{len(sizes)} {case.format} file(s), " + (
            "all from cache" if all(v["cached"] for v in per_batch.values()) else "exported")
