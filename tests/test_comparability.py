"""The one comparability rule (harness.analysis.comparability), and that the
claims, accuracy verdicts and CLI use it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.analysis.comparability import Identity, comparable
from harness.analysis.verdicts import hold, hold_by_rule
from harness.config.baselines import load_baselines
from harness.results import Result
from harness.results.store import Store

REPO = Path(__file__).resolve().parents[1]
BF = load_baselines(REPO / "baselines.yaml")


def _r(**kw):
    base = dict(model="se_resnext50", case="throughput[x-bs1]", stage="throughput", status="passed", device="cpu",
                runner="onnxruntime", batch_size=1, timing_scope="host", artifact_sha256="ab" * 32,
                preprocessing="imagenet_resize256_crop224:p:g", metrics={"throughput_ips": 10.0})
    return Result(**{**base, **kw})


def test_each_field_decides_and_is_named():
    a = _r()
    assert comparable(a, _r(device="gpu")) == (True, "")
    assert comparable(a, _r(timing_scope="device")) == (False, "timing scope host vs device")
    ok, why = comparable(a, _r(artifact_sha256="cd" * 32))
    assert not ok and why.startswith("model artifact abababababab vs cdcdcdcdcdcd")
    ok, why = comparable(a, _r(preprocessing="modelzoo_seresnext50:q:h"))
    assert not ok and why == "preprocessing imagenet_resize256_crop224 vs modelzoo_seresnext50"
    # the source ONNX decides over the per-SoC OM bytes
    om1 = _r(artifact_sha256="11" * 32, metrics={"source_sha256": "onnx1"})
    om2 = _r(artifact_sha256="22" * 32, metrics={"source_sha256": "onnx1"})
    assert comparable(om1, om2)[0]


def test_null_runner_compares_only_with_itself():
    ok, why = comparable(_r(), _r(runner="null"))
    assert not ok and "null-runner" in why
    assert comparable(_r(runner="null"), _r(runner="null"))[0]  # the gate watches harness overhead


def test_assumed_scope_is_said_not_hidden():
    t4 = BF.by_id("se_resnext50.throughput.gpu_t4.bs64")
    p310p = BF.by_id("se_resnext50.throughput.ascend310p.bs4")
    assert t4.scope_source == "assumed" and p310p.scope_source is None
    assert comparable(p310p, t4) == (True, "comparable if the T4 figures are device compute only — assumed")
    assert comparable(p310p, BF.by_id("se_resnext50.throughput.ascend310.bs16")) == (True, "")
    v = hold(1000.0, t4, timing_scope="device")
    assert v.verdict == "pass" and v.reason.endswith("comparable if the T4 figures are device compute only — assumed")
    assert hold(1000.0, t4, timing_scope="host").verdict == "not_comparable"


def test_accuracy_baselines_apply_only_to_their_weights_and_preprocessing():
    zoo = BF.by_id("se_resnext50.top1.ascend910.eval_log")  # ModelZoo weights, square-resize recipe
    cadene = BF.by_id("se_resnext50.top1.ascend310.bs1")  # Cadene weights, shorter-side recipe
    ours = Identity("run", None, "weights:cadene_a260b3a4", "imagenet_resize256_crop224")
    (v,) = hold_by_rule(79.0, cadene, "tolerance", identity=ours)
    assert v.verdict == "pass"
    v1, v2 = hold_by_rule(79.0, zoo, "both", identity=ours)
    assert v1.verdict == v2.verdict == "not_comparable" and v2.rule == "mlperf>=99%"
    assert "weights cadene_a260b3a4 vs modelzoo" in v1.reason
    assert "preprocessing imagenet_resize256_crop224 vs modelzoo_seresnext50" in v1.reason
    unnamed = Identity("run", None, None, "imagenet_resize256_crop224")
    assert "weights unknown vs cadene_a260b3a4" in hold(79.0, cadene, identity=unnamed).reason
    # the ModelZoo 310 inference log's recipe is an assumption, and its verdict says so
    zoo310 = BF.by_id("se_resnext50.top1.ascend310.infer_log")
    v = hold(zoo310.value, zoo310, identity=Identity("run", None, "weights:modelzoo", "modelzoo_seresnext50"))
    assert v.verdict == "pass" and "comparable if the ascend310 figures were made with preprocessing modelzoo_seresnext50 — assumed" \
        in v.reason


def test_every_accuracy_baseline_names_a_known_recipe():
    from harness.data.recipes import RECIPES

    acc = [b for b in BF.baselines if b.metric in ("top1", "top5")]
    assert acc and all(b.preprocessing in RECIPES and b.weights for b in acc)


def test_claims_cli_says_the_t4_verdict_rests_on_an_assumption(tmp_path):
    Store(tmp_path / "s.sqlite").close()
    p = subprocess.run([sys.executable, "-m", "harness", "claims", "--published", "--store",
                        str(tmp_path / "s.sqlite")], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    (line,) = [x for x in p.stdout.splitlines() if "published" in x and "310p_vs_t4" in x]
    assert "comparable if the T4 figures are device compute only — assumed" in line
    (line,) = [x for x in p.stdout.splitlines() if "published" in x and "310p_vs_310." in x]
    assert "assumed" not in line


def test_measured_claims_leave_null_runner_figures_out():
    from harness.analysis.claims import evaluate_claims

    claim = BF.by_id("se_resnext50.claim.310p_vs_310.best_batch")
    null = [_r(device=d, runner="null", batch_size=8, metrics={"throughput_ips": v})
            for d, v in (("ascend310p", 1e6), ("ascend310", 1e3))]
    (v,) = evaluate_claims(null, [claim])
    assert v.verdict == "missing" and v.ratio is None
