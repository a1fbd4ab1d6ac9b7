"""Cross-device claims, outliers, and results merged from several hosts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.results import bundles as imports
from harness.config.baselines import load_baselines
from harness.analysis.claims import ClaimVerdict, evaluate_claims, evaluate_published, table_outliers
from harness.errors import UserError
from harness.results import Result
from harness.results.store import Store

REPO = Path(__file__).resolve().parents[1]
FIX = Path(__file__).parent / "fixtures" / "ascend"
BF = load_baselines(REPO / "baselines.yaml")
CLAIM_310 = BF.by_id("se_resnext50.claim.310p_vs_310.best_batch")
CLAIM_T4 = BF.by_id("se_resnext50.claim.310p_vs_t4.best_batch")


def test_table_outliers():
    p310p = {b.batch_size: b.value for b in BF.baselines
             if b.metric == "throughput_ips" and b.device == "ascend310p"}
    assert table_outliers(p310p) == [32]  # 600.3 between 1396.36 and 1198.41
    p310 = {b.batch_size: b.value for b in BF.baselines if b.metric == "throughput_ips" and b.device == "ascend310"}
    assert table_outliers(p310) == []
    assert table_outliers({1: 10.0, 4: 100.0}) == []  # ends are never flagged
    assert table_outliers({1: 100.0, 2: 70.0, 4: 100.0}, factor=0.8) == [2]


def test_published_tables_against_their_claims():
    by_id = {v.claim_id: v for v in evaluate_published(BF)}
    v = by_id[CLAIM_310.id]
    assert isinstance(v, ClaimVerdict) and v.origin == "published" and v.verdict == "pass"
    assert (v.numerator_batch, v.numerator_value, v.denominator_batch, v.denominator_value) == (4, 1804.86, 16,
                                                                                                 1113.52)
    assert v.ratio == pytest.approx(1.6208, abs=1e-4) and v.min_ratio == 1.2 and v.at == "best_batch"
    assert "ascend310p bs32 (600.3) is far below both neighbours" in v.reason
    assert v.source == {"document": "004_03d065df82a4f76f.txt", "section": "6. 结果 / 2. 吞吐量"}
    t4 = by_id[CLAIM_T4.id]
    assert t4.verdict == "pass" and t4.denominator == "gpu (T4)" and t4.denominator_batch == 64
    assert t4.ratio == pytest.approx(1.7123, abs=1e-4)


def _r(device, bs, ips, *, run="run-a", scope="device", source="onnx1", pre="imagenet_resize256_crop224",
       model_name=None, status="passed", created="2024-01-01T00:00:00+00:00"):
    return Result(model="se_resnext50", case=f"throughput[{device}-bs{bs}]", stage="throughput", status=status,
                  device=device, runner="ais_bench", batch_size=bs, timing_scope=scope,
                  artifact_sha256=f"om-{device}-{bs}", preprocessing=pre, run_id=run, created_at=created,
                  metrics={"throughput_ips": ips, "source_sha256": source, "device_model": model_name})


def test_measured_claim_pass_fail_and_best_batch():
    results = [_r("ascend310", 1, 100.0), _r("ascend310", 8, 150.0), _r("ascend310p", 1, 170.0),
               _r("ascend310p", 8, 200.0), _r("ascend310p", 16, 190.0, status="failed")]
    (v,) = evaluate_claims(results, [CLAIM_310])
    assert v.origin == "measured" and v.verdict == "pass"
    assert (v.numerator_batch, v.denominator_batch, round(v.ratio, 4)) == (8, 8, 1.3333)
    results.append(_r("ascend310", 16, 190.0, created="2024-01-02T00:00:00+00:00"))
    (v,) = evaluate_claims(results, [CLAIM_310])
    assert v.verdict == "fail" and v.denominator_batch == 16 and "1.0526 < 1.2" in v.reason


@pytest.mark.parametrize("change, needle", [
    ({"scope": "host"}, "timing scope device vs host"),
    ({"source": "onnx2"}, "model artifact onnx1 vs onnx2"),
    ({"pre": "modelzoo_seresnext50"}, "preprocessing imagenet_resize256_crop224 vs modelzoo_seresnext50"),
])
def test_measured_claim_refuses_different_things(change, needle):
    results = [_r("ascend310p", 4, 200.0), _r("ascend310", 4, 100.0, **change)]
    (v,) = evaluate_claims(results, [CLAIM_310])
    assert v.verdict == "not_comparable" and needle in v.reason and v.ratio is None


def test_measured_claim_missing_device_and_device_model():
    (v,) = evaluate_claims([_r("ascend310p", 4, 200.0)], [CLAIM_310])
    assert v.verdict == "missing" and "ascend310" in v.reason
    gpu = [_r("ascend310p", 4, 200.0), _r("gpu", 4, 100.0, model_name="NVIDIA A100-SXM4-40GB")]
    (v,) = evaluate_claims(gpu, [CLAIM_T4])
    assert v.verdict == "missing" and "gpu (T4)" in v.reason
    gpu.append(_r("gpu", 8, 110.0, model_name="Tesla T4"))
    (v,) = evaluate_claims(gpu, [CLAIM_T4])
    assert v.verdict == "pass" and v.denominator_value == 110.0


# -- imports and merges ----------------------------------------------------------
def _host_store(path: Path, hostname: str, device: str, values: dict[int, float]) -> Path:
    s = Store(path)
    run = s.begin_run({"hostname": hostname, "devices": {device: True}})
    for b, v in values.items():
        s.add(_r(device, b, v, run=run))
    s.finish_run(run)
    s.close()
    return path


def test_merge_stores_from_two_hosts_without_duplicates(tmp_path):
    a = _host_store(tmp_path / "a.sqlite", "host-310", "ascend310", {1: 100.0, 16: 150.0})
    b = _host_store(tmp_path / "b.sqlite", "host-310p", "ascend310p", {1: 120.0, 4: 200.0})
    main = Store(tmp_path / "main.sqlite")
    assert str(imports.merge_store(main, a)) == "2 result(s) added in 1 new run(s), 0 already present"
    assert imports.merge_store(main, b).results_added == 2
    again = imports.merge_store(main, a)
    assert (again.runs_added, again.results_added, again.results_skipped) == (0, 0, 2)
    # a bundle of the merged store, imported into a third store, brings both hosts
    out = imports.write_bundle(main, tmp_path / "bundle.json")
    third = Store(tmp_path / "third.sqlite")
    assert imports.merge_bundle(third, json.loads(out.read_text())).results_added == 4
    assert {r["env"]["hostname"] for r in third.runs()} == {"host-310", "host-310p"}
    (v,) = evaluate_claims(third.results(), [CLAIM_310])
    assert v.verdict == "pass" and v.ratio == pytest.approx(200.0 / 150.0)
    with pytest.raises(UserError, match="into itself"):
        imports.merge_store(main, tmp_path / "main.sqlite")
    with pytest.raises(UserError, match="not a harness results bundle"):
        imports.merge_bundle(main, {"results": []}, where="x.json")


def test_import_ais_bench_summary_and_published_tables(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    rep = imports.import_ais_bench(store, [FIX / "bs16_summary.json"], model="se_resnext50", device="ascend310p",
                                   device_model="310P3", source_sha256="onnx1", host="box-310p")
    assert rep.results_added == 1
    assert imports.import_ais_bench(store, [FIX / "bs16_summary.json"], model="se_resnext50",
                                    device="ascend310p", device_model="310P3", source_sha256="onnx1",
                                    host="box-310p").results_added == 0
    (r,) = store.results()
    assert (r.batch_size, r.timing_scope, r.metrics["throughput_ips"], r.metrics["origin"]) == (16, "device",
                                                                                               1600.0, "measured")
    assert r.metrics["latencies_ms"] == [9.5, 10.0, 10.0, 10.5]
    assert store.runs()[0]["status"] == "imported" and store.runs()[0]["env"]["hostname"] == "box-310p"

    rep = imports.import_published(store, REPO / "baselines.yaml")
    assert rep.results_added == 18 and imports.import_published(store, REPO / "baselines.yaml").results_added == 0
    published = [x for x in store.results() if x.metrics.get("origin") == "published"]
    assert {(x.device, x.metrics["device_model"]) for x in published} == {
        ("ascend310", None), ("ascend310p", None), ("gpu", "T4")}
    # published figures never stand in for measured ones
    (v,) = evaluate_claims(store.results(), [CLAIM_310])
    assert v.verdict == "missing" and v.origin == "measured"


def test_sniff_and_bad_files(tmp_path):
    assert imports.sniff(FIX / "bs16_summary.json") == "ais_bench"
    with pytest.raises(UserError, match="neither a harness bundle nor an ais_bench summary"):
        imports.sniff(FIX / "not_a_summary.json")
    with pytest.raises(UserError, match="no such file"):
        imports.sniff(tmp_path / "nope.json")


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, capture_output=True, text=True)


def test_cli_import_and_claims(tmp_path):
    a = _host_store(tmp_path / "a.sqlite", "host-310", "ascend310", {16: 150.0})
    store = str(tmp_path / "main.sqlite")
    p = _cli("import", str(a), "--store", store, "--published")
    assert p.returncode == 0, p.stderr
    assert "1 result(s) added" in p.stdout and "18 result(s) added" in p.stdout
    p = _cli("import", str(FIX / "bs16_summary.json"), "--store", store)
    assert p.returncode == 3 and "need --model and --device" in p.stderr
    p = _cli("import", str(FIX / "bs16_summary.json"), "--store", store, "--model", "se_resnext50",
             "--device", "ascend310p", "--source-sha256", "onnx1", "--preprocessing", "imagenet_resize256_crop224")
    assert p.returncode == 0, p.stderr
    out = tmp_path / "v.json"
    p = _cli("claims", "--store", store, "--published", "--json", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert any(line.startswith("PASS") and "measured" in line and "310p_vs_310" in line for line in lines)
    assert any(line.startswith("MISSING") and "310p_vs_t4" in line for line in lines)
    assert sum("published" in line for line in lines) == 2
    assert {v["verdict"] for v in json.loads(out.read_text())} == {"pass", "missing"}
