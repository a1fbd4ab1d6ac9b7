"""The HTML report (harness/reports): rendered from a hand-made store."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.reports import render_report, write_report
from harness.results import Result
from harness.results.store import Store

REPO = Path(__file__).resolve().parents[1]
BASELINES = REPO / "baselines.yaml"

ENV = {
    "harness": "0.1.0", "hostname": "bench-01", "cpu_model": "Intel(R) Xeon(R) Test CPU @ 2.00GHz",
    "cpu_cores": 2, "os": "Linux-6.1-x86_64", "python": "3.11.2",
    "frameworks": {"numpy": "2.1.0", "onnxruntime": "1.20.1", "mindspore": "2.10.0"},
    "devices": {"cpu": True}, "device_details": {}, "git": {"commit": "0123456789abcdef0123", "dirty": True},
}
SKIP_310P = "no Ascend 310P: npu-smi not found"
# Made-up measurements; the report must show them as stored, formatted.
CPU_TP = {1: 11.111, 4: 13.579, 8: 14.246, 16: 13.9}


def _tp(run_id, bs, ips, *, unstable=False):
    return Result(
        model="se_resnext50", case=f"throughput[cpu-onnxruntime-fp32-bs{bs}]", stage="throughput", status="passed",
        device="cpu", target="cpu-onnxruntime-fp32", runner="onnxruntime", runner_version="1.20.1",
        batch_size=bs, precision="fp32", timing_scope="host", artifact_sha256="ab" * 32, artifact_format="onnx",
        preprocessing="imagenet-224", run_id=run_id,
        metrics={"throughput_ips": ips, "latency_ms_p50": 1000 * bs / ips, "latency_ms_p90": 1100 * bs / ips,
                 "latency_ms_p99": 1234.5 * bs / ips, "cv": 0.153 if unstable else 0.021, "unstable": unstable,
                 "iterations": 25, "warmup_iterations": 3, "truncated": False},
        reason=f"{ips:.2f} img/s")


@pytest.fixture()
def store_path(store_spec) -> str:
    """The hand-made store, on each back end (an SQLite path or a PostgreSQL URL)."""
    path = store_spec
    store = Store(path)
    run_id = store.begin_run(ENV, ["pytest", "suites", "-m", "cpu"])
    for bs, ips in CPU_TP.items():
        store.add(_tp(run_id, bs, ips, unstable=(bs == 16)))
    for bs in (1, 4, 8):
        store.add(Result(model="se_resnext50", case=f"throughput[ascend310p-ais_bench-fp16-bs{bs}]",
                         stage="throughput", status="skipped", device="ascend310p", target="ascend310p-ais_bench-fp16",
                         runner="ais_bench", batch_size=bs, precision="fp16", reason=SKIP_310P, run_id=run_id))
    store.add(Result(model="se_resnext50", case="parity[cpu-onnxruntime-fp32-bs1]", stage="parity", status="failed",
                     device="cpu", target="cpu-onnxruntime-fp32", runner="onnxruntime", batch_size=1,
                     artifact_format="onnx", run_id=run_id,
                     metrics={"max_abs_diff": 0.8125, "max_abs_diff_rel": 0.5, "cosine": 0.987654321,
                              "top1_agree": 0.5, "passed": False},
                     reason="onnx on onnxruntime vs MindSpore: max abs diff 0.812 is 0.5 x the logit std "
                            "(allowed 0.001)"))
    verdict = {"id": "se_resnext50.top1.ascend310.bs1", "metric": "top1", "value": 79.05, "unit": "%",
               "measured": 78.5, "source": {"document": "004_03d065df82a4f76f.txt", "section": "6. 结果 / 1. 精度"},
               "tolerance": {"abs": 0.2}, "verdict": "fail",
               "reason": "top1 78.5 misses >= 78.85 (se_resnext50.top1.ascend310.bs1 = 79.05 %)"}
    store.add(Result(model="se_resnext50", case="accuracy[cpu-onnxruntime-fp32-bs1]", stage="accuracy",
                     status="failed", device="cpu", target="cpu-onnxruntime-fp32", runner="onnxruntime", batch_size=1,
                     run_id=run_id, metrics={"top1": 78.5, "top5": 94.125, "num_images": 800}, baseline=verdict,
                     reason=verdict["reason"]))
    store.add(Result(model="xception", case="accuracy[cpu-onnxruntime-fp32-bs1]", stage="accuracy", status="skipped",
                     device="cpu", target="cpu-onnxruntime-fp32", batch_size=1, run_id=run_id,
                     reason="no trained weights: the network is randomly initialised"))
    store.add(Result(model="xception", case="throughput[cpu-onnxruntime-fp32-bs2]", stage="throughput",
                     status="error", device="cpu", target="cpu-onnxruntime-fp32", batch_size=2, run_id=run_id,
                     reason="RuntimeError: <boom> & friends", metrics={"traceback": "Traceback ...\nRuntimeError"}))
    store.finish_run(run_id)
    store.close()
    return path


@pytest.fixture()
def page(store_path) -> str:
    return render_report(store_path, BASELINES)


def test_header_and_environment(page, store_path):
    assert (store_path if "://" in store_path else str(Path(store_path).resolve())) in page
    assert "Intel(R) Xeon(R) Test CPU @ 2.00GHz" in page
    assert "onnxruntime 1.20.1" in page and "mindspore 2.10.0" in page
    assert "0123456789ab (dirty)" in page
    assert "3.11.2" in page
    assert re.search(r"\d{8}T\d{6}Z-[0-9a-f]{6}", page)  # the run id


def test_throughput_measured_beside_documented(page):
    for ips in CPU_TP.values():
        assert f"{ips:.2f}" in page
    # se_resnext50's published 310 / 310P / T4 table, exactly as baselines.yaml holds it
    for doc in ("1113.52", "1804.86", "1054.064", "600.3", "995.492"):
        assert doc in page
    assert "Ascend 310P (documented)" in page and "GPU T4 (documented)" in page
    assert "scope: host" in page and "scope: device" in page
    assert "bs8 (14.25)" in page  # best batch of the measured column
    assert "bs4 (1804.86)" in page and "bs16 (1113.52)" in page
    assert "unstable" in page and "15.3%" in page
    assert "310P ≥ 1.2 × Ascend 310" in page.replace("Ascend 310P ≥", "310P ≥")


def test_chart_is_inline_svg(page):
    assert "<svg" in page and 'class="chart"' in page
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page
    assert "throughput vs batch size" in page


def test_parity_accuracy_skips_and_errors(page):
    assert "0.812" in page and "0.987654" in page
    assert "78.500" in page and "94.125" in page
    assert "004_03d065df82a4f76f.txt" in page and "6. 结果 / 1. 精度" in page
    assert "se_resnext50.top1.ascend310.bs1" in page
    assert "no trained weights: the network is randomly initialised" in page
    # three identical skips are one grouped row, not three
    assert page.count(f"<tr><td>{SKIP_310P}</td>") == 1
    assert "throughput 3" in page
    # stored text is escaped
    assert "&lt;boom&gt; &amp; friends" in page and "<boom>" not in page


def test_self_contained(page):
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert "<script" not in page.lower()
    assert "@import" not in page
    # the SVG's clip paths are url(#id) references inside the page; nothing else
    assert not re.search(r"""url\(\s*["']?(?!#)""", page)


def test_write_report(store_path, tmp_path):
    out = write_report(store_path, tmp_path / "out" / "report.html", BASELINES)
    assert out == tmp_path / "out" / "report.html"
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")


def test_without_baselines_shows_only_stored_figures(store_path):
    page = render_report(store_path)
    assert "13.58" in page
    assert "1804.86" not in page  # documented table comes only from baselines.yaml
    assert "79.05" in page  # but the figure stored with the accuracy result stays


def test_single_run(store_path):
    store = Store(store_path, create=False)
    run_id = store.runs()[0]["run_id"]
    store.close()
    assert "14.25" in render_report(store_path, run_id=run_id)
    with pytest.raises(UserError, match="not in the store"):
        render_report(store_path, run_id="nope")


def test_missing_store_is_a_user_error(tmp_path):
    missing = tmp_path / "nowhere" / "results.sqlite"
    with pytest.raises(UserError, match="not found"):
        write_report(missing, tmp_path / "report.html")
    assert not missing.parent.exists()
    assert not (tmp_path / "report.html").exists()


def test_empty_store(store_spec):
    path = store_spec
    Store(path).close()
    page = render_report(path, BASELINES)
    assert "holds no results" in page


def test_second_run_supersedes_and_is_labelled(store_path):
    store = Store(store_path, create=False)
    run2 = store.begin_run(ENV | {"git": {"commit": "fedcba9876543210", "dirty": False}}, [])
    verdict = {"id": "se_resnext50.throughput.ascend310.bs16", "metric": "throughput_ips", "value": 1113.52,
               "unit": "images/s", "measured": 1076.5,
               "source": {"document": "004_03d065df82a4f76f.txt", "section": "6. 结果 / 2. 吞吐量"},
               "tolerance": {"rel": 0.1}, "verdict": "pass", "reason": "within 10%"}
    store.add(Result(model="se_resnext50", case="throughput[ascend310-ais_bench-fp16-bs16]", stage="throughput",
                     status="passed", device="ascend310", target="ascend310-ais_bench-fp16", runner="ais_bench",
                     batch_size=16, precision="fp16", timing_scope="device", run_id=run2,
                     metrics={"throughput_ips": 1076.5, "latency_ms_p50": 14.86, "latency_ms_p90": 14.9,
                              "latency_ms_p99": 15.2, "cv": 0.01, "unstable": False, "iterations": 100},
                     baseline={"all": [verdict]}))
    store.add(_tp(run2, 8, 15.5))  # supersedes run 1's bs8
    store.finish_run(run2)
    store.close()
    page = render_report(store_path, BASELINES)
    assert "1076.50" in page and "pass vs doc 1113.52" in page
    table = page[page.index("Throughput (images/s) by batch size"):page.index("History over runs")]
    assert "15.50" in table and "14.25" not in table  # superseded in the table...
    history = page[page.index("History over runs"):]
    assert "14.25" in history and "15.50" in history  # ...and kept in the history view
    assert "#2" in page and "fedcba987654" in page and "0123456789ab (dirty)" in page


def test_import_is_light():
    import subprocess
    import sys

    code = ("import sys, harness.reports; "
            "print(any(m in sys.modules for m in ('matplotlib', 'jinja2')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"
    # the pytest plugin (every `pytest suites/...` start) leaves scipy.stats and ruptures to the first analysis
    code = "import sys, harness.plugin; print(sorted(m for m in ('scipy.stats', 'ruptures') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_report_ratios_need_comparable_figures_and_leave_null_runner_out(tmp_path):
    """310P by ONNX Runtime (host scope) and 310 by ais_bench (device scope):
    no ratio, a note naming the scope; a null-runner column is not published
    as throughput, and its raw latency row says what it is."""
    from report_fixtures import env, latencies, throughput_result

    import numpy as np

    from harness.reports.html import build_context

    rng = np.random.default_rng(0)
    store = Store(tmp_path / "s.sqlite")
    run_id = store.begin_run(env(), ["harness", "run"])
    for device, runner, scope, ips in (("ascend310p", "onnxruntime", "host", 1600.0),
                                       ("ascend310", "ais_bench", "device", 1000.0), ("cpu", "null", "host", 1e6)):
        for bs in (1, 8):
            store.add(throughput_result(run_id, "se_resnext50", device, runner, scope, bs, latencies(rng, ips, bs, 10)))
    store.finish_run(run_id, "finished")
    store.close()
    ctx = build_context(tmp_path / "s.sqlite", BASELINES)
    (m,) = ctx["models"]
    assert not m["ratios"]["headers"]
    assert any("not comparable: timing scope host vs device" in n for n in m["ratios"]["notes"])
    labels = [c["label"] for c in m["throughput"]["columns"]]
    assert not any("null" in lab for lab in labels) and any("ais_bench" in lab for lab in labels)
    assert not any("null" in s["label"] for s in m["throughput"]["series"])
    null_rows = [r for r in m["latency"] if r["runner"].startswith("null")]
    assert null_rows and all("null runner: no inference" in r["throughput"] for r in null_rows)
    # the published T4 claim rests on an assumed timing scope, and says so
    t4 = next(c for c in m["claim_verdicts"] if c["origin"] == "published" and "t4" in c["id"])
    assert "comparable if the T4 figures are device compute only — assumed" in t4["reason"]
    html = render_report(tmp_path / "s.sqlite", BASELINES)
    assert "not comparable: timing scope host vs device" in html and "— assumed" in html
