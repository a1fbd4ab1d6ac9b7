"""`harness import` of ais_bench results: summary JSON of every key set and
console logs of every release (fixtures: tests/fixtures/ais_bench, cited in
its README.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.results import bundles
from harness.results.store import Store

REPO = Path(__file__).resolve().parents[1]
AB = Path(__file__).parent / "fixtures" / "ais_bench"


def _one(tmp_path, name, **kw):
    store = Store(tmp_path / "s.sqlite")
    try:
        rep = bundles.import_ais_bench(store, [AB / name], model="se_resnext50", device="ascend310p", **kw)
        assert rep.results_added == 1
        (r,) = store.results()
        return r
    finally:
        store.close()


def test_summary_json_with_argv_list_gives_its_batch_size_and_p99(tmp_path):
    # ais_bench writes args = sys.argv (a list): `--batchsize 8` in it
    r = _one(tmp_path, "gen_summary_P99_count.json")
    assert r.batch_size == 8 and r.case == "throughput[imported-ais_bench-ascend310p-bs8]"
    assert r.metrics["latency_ms_p99"] == pytest.approx(3.6186)
    assert r.metrics["iterations"] == 8
    assert r.metrics["throughput_ips"] == pytest.approx(1000 * 8 / 3.5425)
    assert r.metrics["ais_bench_variant"] == "json-P99-count"


@pytest.mark.parametrize("name, variant, batch, tput", [
    ("gen_tabulate_display_all_bs8.log", "ais_bench-tabulate", 8, None),
    ("ais_bench_2023_readme_default.log", "ais_bench-2023", 1, None),
    ("ais_infer_2022.11_readme_batchsize.log", "ais_infer-2022.09", 1, None),
    ("ais_bench_2023_readme_multidevice.log", "ais_bench-2023", 1, "summary"),
])
def test_console_logs_of_every_release_import(tmp_path, name, variant, batch, tput):
    d = bundles.out.parse_ais_bench_file(AB / name)
    r = _one(tmp_path, name)
    assert r.batch_size == batch and r.timing_scope == "device" and r.metrics["ais_bench_variant"] == variant
    expected = d["summary_throughput_ips"] if tput == "summary" else d["throughput_ips"]
    assert expected and r.metrics["throughput_ips"] == pytest.approx(expected)
    if tput == "summary":
        assert len(r.metrics["per_device"]) == 2


def test_a_log_without_a_batch_needs_the_option(tmp_path):
    # the multi-thread layout's statistics line alone (hand_ait_multithread_mean_only.log
    # without its throughput line): no batch anywhere in the file
    lines = (AB / "hand_ait_multithread_mean_only.log").read_text().splitlines()
    log = tmp_path / "mean_only.log"
    log.write_text("\n".join(x for x in lines if "throughput" not in x) + "\n")
    store = Store(tmp_path / "s.sqlite")
    with pytest.raises(UserError, match="names no batch size"):
        bundles.import_ais_bench(store, [log], model="se_resnext50", device="ascend310p")
    bundles.import_ais_bench(store, [log], model="se_resnext50", device="ascend310p", batch_size=4)
    (r,) = store.results()
    assert r.batch_size == 4 and r.metrics["throughput_ips"] == pytest.approx(1000 * 4 / 1.8542)
    store.close()


def test_sniff_tells_logs_from_other_text(tmp_path):
    assert bundles.sniff(AB / "gen_tabulate_single.log") == "ais_bench"
    assert bundles.sniff(AB / "hand_inference_tools_2022.05.log") == "ais_bench"
    other = tmp_path / "notes.txt"
    other.write_text("nothing to see\n")
    with pytest.raises(UserError, match="console log"):
        bundles.sniff(other)


def test_cli_imports_a_console_log(tmp_path):
    store = tmp_path / "s.sqlite"
    p = subprocess.run([sys.executable, "-m", "harness", "import", str(AB / "gen_tabulate_single.log"), "--store",
                        str(store), "--model", "se_resnext50", "--device", "ascend310p", "--batch-size", "1"],
                       cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "1 ais_bench file(s)" in p.stdout and "1 result(s) added" in p.stdout
    crash = subprocess.run([sys.executable, "-m", "harness", "import", str(AB / "hand_crash_no_summary.log"),
                            "--store", str(store), "--model", "se_resnext50", "--device", "ascend310p"],
                           cwd=REPO, capture_output=True, text=True)
    assert crash.returncode != 0 and "Traceback" not in crash.stderr
