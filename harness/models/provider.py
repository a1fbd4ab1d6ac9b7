"""Networks and artifacts for a suite, made lazily and memoised for one run.

A suite's source (mindcv network, timm model, or a user's ONNX file) becomes
the framework network (the parity reference) and its artifacts: ONNX and
MINDIR per batch size (MindSpore bakes the batch into its exports), one
dynamic-batch ONNX from torch, and OM files converted by ``atc`` for the SoC
of the Ascend device at hand. Artifacts are cached on disk by what they were
made from (:class:`harness.models.cache.ArtifactCache`).
"""

from __future__ import annotations

import dataclasses
import gc
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

from harness.config.suite import Suite
from harness.errors import CaseSkipped, UserError
from harness.models import atc, mindspore_net, onnx_batch, torch_net, torch_reference
from harness.models.cache import Artifact, ArtifactCache, sha256_file

# MindSpore bakes the batch into an ONNX export: the network is exported once at
# this batch size, and the file is rewritten for the others (models/onnx_batch.py)
REBATCH_FROM = 1


def predict(net, x):
    """Logits of a framework network (MindSpore cell or torch module) for an NCHW array."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(net, torch.nn.Module):
        return torch_net.predict(net, x)

    return mindspore_net.predict(net, x)


def check_onnx_file(path: Path) -> None:
    """A user's ONNX file (source.path) must parse and pass onnx's checker: a
    truncated copy or another kind of file is an error naming it, before any
    case uses it. (Its fix is the user's: the harness did not make this file.)"""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
        if not model.graph.node or not model.graph.output:
            raise ValueError("the graph has no nodes or no outputs")
    except Exception as exc:  # protobuf's DecodeError, onnx's ValidationError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"not a usable ONNX model ({path.stat().st_size} bytes): {first[:300]}", path=path.resolve(),
                        fix="this is the suite's own file (source.path): copy it again in full (a truncated "
                            "copy fails like this) or export it again from its framework") from None


def largest_tensor_bytes(path: Path) -> int | None:
    """The largest tensor of an ONNX graph per sample (batch dimension taken as
    1), after shape inference; tensors with other symbolic dimensions are left
    out. None when the file does not parse."""
    import onnx

    try:
        model = onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False))
    except Exception:  # check_onnx_file reports a broken file; here it just means "unknown"
        return None
    best = 0
    g = model.graph
    for vi in (*g.input, *g.value_info, *g.output):
        dims = vi.type.tensor_type.shape.dim
        if not dims:
            continue
        n = 1
        for i, d in enumerate(dims):
            if d.HasField("dim_value"):
                n *= d.dim_value if i else 1
            elif i:  # a symbolic dimension other than the batch: size unknown
                n = 0
                break
        best = max(best, n)
    return best * 4 if best else None


def _made_by(meta: dict) -> str | None:
    """How a cached file was made, where it was not exported by its framework directly."""
    src = meta.get("rebatched_from")
    return f"rewritten from the batch-{src['batch_size']} export {src['sha256'][:12]}" if src else None


class ModelProvider:
    """``chips(family)`` names the NPU chips of a family on this host (for atc's
    --soc_version); ``why_absent(family)`` says why there are none."""

    def __init__(self, cache: ArtifactCache, *, chips: Callable[[str], list[str]] = lambda fam: [],
                 why_absent: Callable[[str], str] = lambda fam: f"no {fam} on this host"):
        self.cache = cache
        self._chips, self._why_absent = chips, why_absent
        self._nets: dict[tuple, object] = {}
        self._artifacts: dict[tuple, Artifact] = {}
        self.om_source: dict[Path, str] = {}  # OM -> sha256 of the ONNX it was converted from
        self._checked: set[str] = set()  # sha256 of the users' ONNX files that parsed and checked
        self._file_sha: dict[tuple, str] = {}  # (path, size, mtime) -> sha256 of a user's ONNX file
        self._checkpoints: dict[Path, Path | None] = {}  # suite -> the weights it loads
        self._rebatch_ok: dict[Path, bool] = {}  # suite -> its export survives the batch rewrite, row for row
        # "train or load": a suite's trained checkpoint (set by the stages' context; None: none asked for)
        self.trained: Callable[[Suite], Path | None] = lambda suite: None

    def checkpoint_of(self, suite: Suite) -> Path | None:
        """The weights the suite's network loads: source.checkpoint, else the
        checkpoint its train stage feeds (trained now if not cached), else none.
        Asked once per artifact: found once per suite (planning a training run lists its dataset)."""
        if suite.path not in self._checkpoints:
            self._checkpoints[suite.path] = suite.resolve(suite.source.checkpoint) or self.trained(suite)
        return self._checkpoints[suite.path]

    # -- the framework network ------------------------------------------------------------
    def network(self, suite: Suite, device_target: str = "CPU"):
        src = suite.source
        memo = (suite.path, src.kind)
        if memo in self._nets:
            return self._nets[memo]
        self._forget_other_networks(suite)
        if src.kind == "pytorch":  # the timm model itself (parity reference for its export)

            net = torch_net.build_model(src.arch, src.num_classes, self.checkpoint_of(suite), seed=src.seed)
        elif src.kind == "mindcv":
            torch_reference.need_mindspore(f"the mindcv source ({src.arch})")
            mindspore_net.set_context(device_target)
            net = mindspore_net.build_network(src.arch, src.num_classes, seed=src.seed)
            ckpt = self.checkpoint_of(suite)
            if ckpt is not None:
                mindspore_net.load_checkpoint(net, ckpt)
            elif src.init == "scaled":
                mindspore_net.reinit_well_scaled(net, src.seed)
        else:
            raise CaseSkipped(f"source.kind is {src.kind!r}: there is no framework network to run")
        self._nets[memo] = net
        return net

    def _forget_other_networks(self, suite: Suite) -> None:
        """Networks are held for one suite at a time: a run goes suite by suite, and
        each held network (with what its framework compiled for it) is hundreds of MB
        that the next suite's cases would otherwise carry. A suite asked for again
        builds its network again, with the same seed or checkpoint."""
        stale = [k for k in self._nets if k[0] != suite.path and k[1] in ("mindcv", "pytorch", "torch")]
        for k in stale:
            del self._nets[k]
        if stale:
            gc.collect()

    def torch_network(self, suite: Suite):
        """The suite's network in PyTorch (the torch runner's), and what it is:
        {"network": timm name, "weights": ...} (:mod:`harness.models.torch_reference`)."""
        memo = (suite.path, "torch")
        if memo not in self._nets:
            if suite.source.kind == "pytorch":  # the parity reference's own network, built once
                torch_reference.need_torch("the pytorch source")
                self._nets[memo] = (self.network(suite), self._torch_info(suite))
            else:
                self._nets[memo] = torch_reference.build(suite, self.checkpoint_of(suite))
        return self._nets[memo]

    def _torch_info(self, suite: Suite) -> dict:
        ckpt, src = self.checkpoint_of(suite), suite.source
        return {"network": torch_net.timm_name(src.arch),
                "weights": str(ckpt) if ckpt else f"random init (seed {src.seed})"}

    def torch_onnx(self, suite: Suite, batch_size: int) -> Artifact:
        """The ONNX export of :meth:`torch_network` (dynamic batch): the suite's own
        export for a pytorch source, else the reference's, cached beside it."""
        if suite.source.kind == "pytorch":
            return self.artifact(suite, "onnx", batch_size)
        memo = (suite.path, "onnx:torch", "dynamic")
        first = self._artifacts.get(memo)
        if first is None:
            src = suite.source
            net, info = self.torch_network(suite)
            key = self.cache.key(suite, f"onnx:torch-reference:{src.opset}:dynamic", 0,
                                 checkpoint=self.checkpoint_of(suite))

            def produce(tmp):
                return torch_net.export_onnx(net, tmp, suite.input.size, opset=src.opset, channels=suite.input.channels)

            first = self._artifacts[memo] = self._cached(key, "onnx", batch_size, produce, {
                "suite": str(suite.path), "arch": src.arch, "source": "torch reference", **info, "opset": src.opset,
                "dynamic_batch": True})
        return dataclasses.replace(first, batch_size=batch_size, export_s=None, cached=True)

    def activation_bytes(self, suite: Suite) -> int | None:
        """Bytes of the largest intermediate tensor per sample (float32), read
        from an ONNX graph's shapes: the user's file, or for a framework source
        its ONNX export at batch 1 (made now if need be, cached like any
        artifact: small, and what FLOPs are counted from too). None when no
        graph can be had (an export that fails) or its shapes are symbolic."""
        src = suite.source
        memo = (suite.path, "activations")
        if memo not in self._nets:
            self._nets[memo] = None
            path = suite.resolve(src.path) if src.kind == "onnx" and src.path else None
            if path is None and src.kind != "onnx":
                try:
                    path = self.artifact(suite, "onnx", 1).path
                except (CaseSkipped, UserError, ImportError, RuntimeError, ValueError, MemoryError, OSError):
                    path = None  # no graph: the guard counts input and output only
            if path is not None and path.is_file():
                self._nets[memo] = largest_tensor_bytes(path)
        return self._nets[memo]

    # -- artifacts ---------------------------------------------------------------------------
    def artifact(self, suite: Suite, fmt: str, batch_size: int, device: str | None = None) -> Artifact:
        if fmt == "om":
            return self.om(suite, batch_size, device)
        memo = (suite.path, fmt, batch_size)
        if memo not in self._artifacts:
            self._artifacts[memo] = self._make(suite, fmt, batch_size)
        return self._artifacts[memo]

    def _make(self, suite: Suite, fmt: str, batch_size: int) -> Artifact:
        src = suite.source
        if src.kind == "onnx":
            if fmt != "onnx":
                raise CaseSkipped(f"cannot make {fmt} from an ONNX source")
            path = suite.resolve(src.path)
            if not path.is_file():
                raise UserError("ONNX model not found", path=path, fix="fix source.path in the suite")
            st = path.stat()
            stamp = (path, st.st_size, st.st_mtime_ns)
            if stamp not in self._file_sha:  # hashed once per file, not per batch size
                self._file_sha[stamp] = sha256_file(path)
            sha = self._file_sha[stamp]
            if sha not in self._checked:  # once per file content, not per batch size
                check_onnx_file(path)
                self._checked.add(sha)
            return Artifact("onnx", path, sha, batch_size, None, cached=True)
        if src.kind == "pytorch":
            if fmt != "onnx":
                raise CaseSkipped(f"cannot make {fmt} from a PyTorch source (it exports ONNX; OM is converted "
                                  "from that)")
            # one dynamic-batch file serves every batch size: made (or found and verified) once
            first = self._artifacts.get((suite.path, fmt, "dynamic"))
            if first is not None:
                return dataclasses.replace(first, batch_size=batch_size, export_s=None, cached=True)
            key = self.cache.key(suite, f"onnx:pytorch:{src.opset}:dynamic", 0, checkpoint=self.checkpoint_of(suite))

            def produce(tmp):
                return torch_net.export_onnx(self.network(suite), tmp, suite.input.size, opset=src.opset,
                                             channels=suite.input.channels)

            meta = {"suite": str(suite.path), "arch": src.arch, "source": "pytorch", "opset": src.opset,
                    "dynamic_batch": True}
            art = self._cached(key, fmt, batch_size, produce, meta)
            self._artifacts[(suite.path, fmt, "dynamic")] = art
            return art
        shape = (batch_size, suite.input.channels, suite.input.size, suite.input.size)
        key = self.cache.key(suite, fmt, batch_size, checkpoint=self.checkpoint_of(suite))
        if fmt == "onnx" and batch_size != REBATCH_FROM and self.cache.lookup(key, fmt) is None:
            art = self._rebatched(suite, key, batch_size)  # one MindSpore compile, not one per batch size
            if art is not None:
                return art

        def produce(tmp):
            return mindspore_net.export(self.network(suite), shape, fmt.upper(), tmp)

        return self._cached(key, fmt, batch_size, produce, {"suite": str(suite.path), "arch": src.arch,
                                                             "shape": shape})

    def _rebatched(self, suite: Suite, key: str, batch_size: int) -> Artifact | None:
        """The suite's ONNX at ``batch_size``, rewritten from its export at REBATCH_FROM
        (one MindSpore export instead of one per batch size); None where the graph does
        not allow it, or its rows did not come out as the single-image graph's (then the
        caller exports from MindSpore)."""
        base = self.artifact(suite, "onnx", REBATCH_FROM)
        if suite.path not in self._rebatch_ok:
            probe = self.cache.root / ".rebatch-check" / base.sha256[:16]
            try:
                probe.mkdir(parents=True, exist_ok=True)
                two = onnx_batch.rebatch(base.path, 2, probe / "bs2")
                self._rebatch_ok[suite.path] = onnx_batch.rows_agree(base.path, two, seed=suite.source.seed)
            except onnx_batch.NotRebatchable:
                self._rebatch_ok[suite.path] = False
            finally:
                shutil.rmtree(probe, ignore_errors=True)
        if not self._rebatch_ok[suite.path]:
            return None
        meta = {"suite": str(suite.path), "arch": suite.source.arch,
                "shape": (batch_size, suite.input.channels, suite.input.size, suite.input.size),
                "rebatched_from": {"batch_size": REBATCH_FROM, "sha256": base.sha256}}
        try:
            art = self._cached(key, "onnx", batch_size, lambda tmp: onnx_batch.rebatch(base.path, batch_size, tmp), meta)
        except onnx_batch.NotRebatchable:
            shutil.rmtree(self.cache.root / key, ignore_errors=True)
            return None
        return art

    def _cached(self, key, fmt, batch_size, produce, meta) -> Artifact:
        path = self.cache.lookup(key, fmt)
        if path is not None:
            meta = self.cache.meta(path)
            return Artifact(fmt, path, meta["sha256"], batch_size, None, cached=True, command=_made_by(meta))
        t0 = time.perf_counter()
        path, sha = self.cache.store(key, fmt, produce, meta)
        return Artifact(fmt, path, sha, batch_size, time.perf_counter() - t0, cached=False, command=_made_by(meta))

    def om(self, suite: Suite, batch_size: int, device: str, gears: list[int] | None = None) -> Artifact:
        """A static OM for one batch size, or (with gears) one dynamic-batch OM,
        converted by atc for the SoC npu-smi reports; cached beside the ONNX
        artifacts, its atc command recorded with it."""
        chips = self._chips(device)
        if not chips:
            raise CaseSkipped(self._why_absent(device))
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
        self.om_source[om] = onnx_art.sha256
        self._artifacts[memo] = art
        return art
