"""Subcommands for results from several hosts and devices:
`harness import | bundle | claims | devices`. Registered by :mod:`harness.cli.main`."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

from harness.analysis.claims import evaluate_claims, evaluate_published
from harness.config.baselines import load_baselines, locate_baselines
from harness.errors import ExitCode, UserError
from harness.fsio import check_writable, read_user_text, write_text
from harness.results import bundles
from harness.results.bundles import write_bundle
from harness.results.store import Store
from harness.runners import devices
from harness.vocab import GPU_FAMILIES, HOST_DEVICE, NPU_FAMILIES

STORE_HELP = ("results store: an SQLite file or postgresql://USER@HOST:PORT/DB "
              "(default $HARNESS_STORE or .harness/results.sqlite)")


def _cmd_import(args) -> int:
    if not args.files and not args.published:
        raise UserError("nothing to import", fix="pass files, or --published [baselines.yaml]")
    store = Store(args.store)
    try:
        if args.published:
            p = locate_baselines(None if args.published is True else args.published)
            if p is None:
                raise UserError("no baselines file", fix="pass --published PATH")
            print(f"{p}: published tables: {bundles.import_published(store, p)}")
        summaries, trtexec_logs = [], []
        for f in args.files:
            kind = bundles.sniff(f)
            if kind == "store":
                print(f"{f}: store: {bundles.merge_store(store, f)}")
            elif kind == "bundle":
                print(f"{f}: bundle: {bundles.merge_bundle(store, _read_json(f), where=f)}")
            elif kind == "trtexec":
                trtexec_logs.append(f)
            else:
                summaries.append(f)
        if summaries:
            missing = [o for o, v in (("--model", args.model), ("--device", args.device)) if not v]
            if missing:
                raise UserError(f"ais_bench results need {' and '.join(missing)}", path=summaries[0],
                                fix="e.g. --model se_resnext50 --device ascend310p --batch-size 16")
            rep = bundles.import_ais_bench(
                store, summaries, host=args.host, model=args.model, device=args.device, batch_size=args.batch_size,
                device_model=args.device_model, artifact_sha256=args.artifact_sha256,
                source_sha256=args.source_sha256, preprocessing=args.preprocessing, precision=args.precision)
            print(f"{len(summaries)} ais_bench file(s): {rep}")
        if trtexec_logs:
            _import_trtexec(store, trtexec_logs, args)
    finally:
        store.close()
    return ExitCode.OK


def _read_json(path) -> object:
    try:
        return json.loads(read_user_text(path, what="bundle"))
    except ValueError as exc:
        raise UserError(f"not valid JSON ({exc})", path=path,
                        fix="write the bundle again with `harness bundle --out FILE`") from None


def _import_trtexec(store, logs, args) -> None:
    missing = [o for o, v in (("--model", args.model), ("--device", args.device)) if not v]
    if missing:
        raise UserError(f"trtexec logs need {' and '.join(missing)}", path=logs[0],
                        fix=f"e.g. --model se_resnext50 --device {GPU_FAMILIES[0]} --batch-size 16")
    if args.device not in GPU_FAMILIES:
        raise UserError(f"a trtexec log is a GPU measurement, not {args.device}", path=logs[0],
                        fix=f"pass --device {GPU_FAMILIES[0]}")
    rep = bundles.import_trtexec(store, logs, host=args.host, model=args.model, device=args.device,
                                 batch_size=args.batch_size, device_model=args.device_model,
                                 source_sha256=args.source_sha256, preprocessing=args.preprocessing,
                                 precision=args.precision)
    print(f"{len(logs)} trtexec log(s): {rep}")


def _cmd_bundle(args) -> int:
    if Path(args.out).exists():
        raise UserError("file already exists", path=args.out, fix="choose another --out or remove the file")
    check_writable(args.out, what="bundle")
    store = Store(args.store, read_only=True)  # only reads: a newer or foreign file stays untouched
    try:
        out = write_bundle(store, args.out)
    finally:
        store.close()
    print(f"bundle: {out} (import it on another host with `harness import {out.name}`)")
    return ExitCode.OK


def _cmd_claims(args) -> int:
    p = locate_baselines(args.baselines)
    if p is None:
        raise UserError("no baselines file (claims live there)", fix="pass --baselines PATH")
    bf = load_baselines(p)
    if args.json:
        check_writable(args.json, what="--json file")
    verdicts = evaluate_published(bf) if args.published or args.published_only else []
    if not args.published_only:
        store = Store(args.store, read_only=True)
        try:
            verdicts = evaluate_claims(store.results(), bf.claims) + verdicts
        finally:
            store.close()
    for v in verdicts:
        print(f"{v.verdict.upper():15} {v.origin:9} {v.claim_id}: {v.reason}")
    if args.json:  # a side output: its failure never changes the verdict
        try:
            write_text(args.json, json.dumps([dataclasses.asdict(v) for v in verdicts], indent=1))
        except UserError as exc:
            print(f"error: side output not written (the verdicts above and the exit code stand): {exc}",
                  file=sys.stderr)
    return ExitCode.FAILED if any(v.verdict == "fail" for v in verdicts) else ExitCode.OK


def _cmd_devices(args) -> int:
    rep = devices.detect()
    if args.json:
        print(json.dumps(dataclasses.asdict(rep), indent=1))
        return ExitCode.OK
    details = {HOST_DEVICE: f"{devices.cpu_model()}, {os.cpu_count()} logical cores", **rep.details}
    for fam, present in rep.present.items():
        shown = ("yes: " + details[fam] if details.get(fam) else "yes") if present else rep.why_absent.get(fam, "no")
        print(f"{fam:11} {shown}")
    for line in _tool_lines(rep):
        print(line)
    return ExitCode.OK


def _tool_lines(rep) -> list[str]:
    """npu-smi and CANN (only what is known), ONNX Runtime's providers, MindSpore's backends."""
    lines = []
    npu = rep.npu
    if npu is not None:
        known = [f"{label} {v}" for label, v in (("npu-smi", npu.npu_smi_version), ("driver", npu.driver_version),
                                                  ("firmware", npu.firmware_version)) if v]
        lines.append(f"npu-smi: {', '.join(known) or 'versions not reported'}; CANN {rep.cann_version or 'not found'}")
    else:
        lines.append("npu-smi: not found (no Ascend NPU here)")
    lines.append(f"onnxruntime providers: {', '.join(rep.onnxruntime_providers) or 'onnxruntime not installed'}")
    if not rep.mindspore_targets:
        lines.append("mindspore: not installed")
        return lines
    # the unified wheel carries every backend; one runs only where its device (and driver) is
    usable = {"CPU": True, "GPU": any(rep.present.get(f) for f in GPU_FAMILIES),
              "Ascend": any(rep.present.get(f) for f in NPU_FAMILIES)}
    here = [t for t in rep.mindspore_targets if usable.get(t)]
    idle = [t for t in rep.mindspore_targets if not usable.get(t)]
    them = "it" if len(idle) == 1 else "them"
    lines.append(f"mindspore targets: {', '.join(here)}"
                 + (f" (this build also carries {', '.join(idle)}; no device here for {them})" if idle else ""))
    return lines


def register(sub) -> None:
    imp = sub.add_parser(
        "import", help="import results: another store, a bundle, ais_bench summaries, published tables",
        description="Merge results measured elsewhere into the store, without duplicates. FILES may be "
                    "results stores (.sqlite), bundles written by `harness bundle`, or ais_bench "
                    "results (its *_summary.json or its console log, of any release) or saved trtexec logs "
                    "(with --model and --device). Example: "
                    "harness import host310p.sqlite; harness import out/run_summary.json --model se_resnext50 "
                    "--device ascend310p --batch-size 16; harness import ais_bench.log --model se_resnext50 "
                    "--device ascend310p --batch-size 16; harness import t4_bs16.log --model se_resnext50 "
                    "--device gpu; harness import --published")
    imp.add_argument("files", nargs="*", metavar="FILE",
                     help="results stores, bundles, ais_bench summaries or console logs, trtexec logs")
    imp.add_argument("--store", help=STORE_HELP)
    imp.add_argument("--published", nargs="?", const=True, metavar="BASELINES",
                     help="also import the documents' throughput tables (default baselines.yaml)")
    g = imp.add_argument_group("for ais_bench summaries and console logs, and trtexec logs")
    g.add_argument("--model", help="model key, e.g. se_resnext50")
    g.add_argument("--device", choices=(*NPU_FAMILIES, *GPU_FAMILIES), help="the device family they were measured on")
    g.add_argument("--device-model", help="chip name npu-smi reports, e.g. 310P3; GPU name, e.g. T4 (default for "
                                          "trtexec: its 'Selected Device')")
    g.add_argument("--batch-size", type=int, help="default: the summary's args (batchsize/dymBatch) or the ais_bench "
                                                  "log's throughput line; trtexec: "
                                                  "--shapes or --batch in its command line")
    g.add_argument("--host", help="the host the summaries came from")
    g.add_argument("--artifact-sha256", help="default: sha256 of the OM named in the summary, if readable here")
    g.add_argument("--source-sha256", help="sha256 of the ONNX the OM (or TensorRT engine) was made from "
                                           "(trtexec: default the --onnx file's, if readable here)")
    g.add_argument("--preprocessing", help="preprocessing identity, as the harness records it")
    g.add_argument("--precision", choices=("fp32", "fp16", "int8", "mixed"), help="the precision the model ran in")
    imp.set_defaults(func=_cmd_import)

    b = sub.add_parser("bundle", help="write the store's runs and results to one JSON file for `harness import`")
    b.add_argument("--store", help=STORE_HELP)
    b.add_argument("--out", required=True, metavar="FILE",
                   help="the bundle to write (a new file: an existing one is never overwritten)")
    b.set_defaults(func=_cmd_bundle)

    c = sub.add_parser("claims", help="evaluate cross-device claims (e.g. 310P >= 1.2x 310) from the store",
                       description="Exit 1 when a claim fails. --published adds the documents' own tables.")
    c.add_argument("--store", help=STORE_HELP)
    c.add_argument("--baselines", help="baselines file (default baselines.yaml)")
    c.add_argument("--published", action="store_true", help="also hold the published tables against the claims")
    c.add_argument("--published-only", action="store_true", help="only the published tables; no store needed")
    c.add_argument("--json", metavar="FILE", help="also write the verdicts as JSON")
    c.set_defaults(func=_cmd_claims)

    d = sub.add_parser("devices", help="show detected devices, drivers, CANN, providers")
    d.add_argument("--json", action="store_true", help="print the whole detection report as JSON")
    d.set_defaults(func=_cmd_devices)
