"""ais_bench console logs and summary JSON of every release, read back.

Fixtures: tests/fixtures/ais_bench (sources in its README.md)."""

from __future__ import annotations

import pytest

from pathlib import Path

from harness.errors import UserError
from harness.runners import ais_bench_io as ab

AB = Path(__file__).parent / "fixtures" / "ais_bench"


def parse(name, **kw):
    return ab.parse_ais_bench_file(AB / name, **kw)


# -- layouts documented in REFERENCE.md (extend, don't break) -------------------
def test_reference_md_sample_still_parsed():
    d = parse("reference_md_sample.log")
    assert d["variant"] == "ais_bench-2023"
    assert d["batch_size"] == 1 and d["batch_size_source"] == "throughput line"
    # the sample's throughput line is self-consistent (1000 * 1 / 13.685...) ...
    assert d["throughput_ips"] == pytest.approx(73.07201342826471)
    # ... but its statistics line says 0.66 ms: kept, and flagged
    assert d["npu_compute_time_ms"]["mean"] == 0.66 and d["npu_compute_time_ms"]["p99"] == 0.66
    assert any("13.685129957199097" in w for w in d["warnings"])


def test_first_module_api_on_the_reference_sample():
    s = ab.parse_stdout((AB / "reference_md_sample.log").read_text())
    assert s.batch_size == 1 and s.throughput_ips == pytest.approx(73.07201342826471)
    assert s.npu_compute_time.mean == 0.66 and s.throughput() == pytest.approx(73.07201342826471)
    assert s.as_metrics()["latency_ms_p99"] == 0.66


def test_ais_infer_2022_batchsize_form():
    d = parse("ais_infer_2022.11_readme_batchsize.log")
    assert d["variant"] == "ais_infer-2022.09"
    assert d["throughput_ips"] == pytest.approx(1512.8592735267011)
    assert d["npu_compute_time_ms"]["median"] == pytest.approx(0.6610000133514404)
    assert d["h2d_latency_ms"] is None and d["features"]["display_all_summary"] is False


def test_ais_infer_2022_batchsize_form_display_all():
    d = parse("ais_infer_2022.11_readme_batchsize_display_all.log")
    assert d["variant"] == "ais_infer-2022.09" and d["features"]["display_all_summary"]
    assert d["h2d_latency_ms"]["mean"] == pytest.approx(0.05700000002980232)
    assert d["d2h_latency_ms"]["p99"] == pytest.approx(0.014999999664723873)
    assert d["throughput_ips"] == pytest.approx(1503.759349974173)


def test_ais_bench_2023_default_and_display_all():
    d = parse("ais_bench_2023_readme_default.log")
    assert d["variant"] == "ais_bench-2023" and d["batch_size"] == 1
    assert d["throughput_ips"] == pytest.approx(1512.8592735267011)
    assert d["throughput_source"].startswith("printed (checked")
    d = parse("ais_bench_2023_readme_display_all.log")
    assert d["h2d_latency_ms"]["max"] == pytest.approx(0.05700000002980232)
    assert d["npu_compute_time_ms"]["mean"] == pytest.approx(0.6650000214576721)
    assert d["throughput_ips"] == pytest.approx(1503.759349974173)


def test_ais_bench_2023_multidevice_readme():
    d = parse("ais_bench_2023_readme_multidevice.log")
    assert d["features"]["multi_device"]
    assert d["throughput_ips"] == pytest.approx(557.9376050278543)
    assert d["summary_throughput_ips"] == pytest.approx(557.9376050278543)
    assert [(e["index"], e["device_id"]) for e in d["per_device"]] == [(0, 1), (1, 2)]
    dev1, dev2 = d["per_device"]
    assert dev1["throughput_ips"] == pytest.approx(281.38893494131406)
    assert dev1["npu_compute_time_ms"]["p99"] == pytest.approx(3.936680030822754)
    assert dev2["npu_compute_time_ms"]["mean"] == pytest.approx(3.616000032424927)
    assert dev2["start_time"] == "1676875630.8043878" and dev2["end_time"] == "1676875630.8326817"
    assert d["npu_compute_time_ms"] is None  # no single device's figure stands for the run
    s = ab.parse_stdout((AB / "ais_bench_2023_readme_multidevice.log").read_text())
    assert s.throughput() == pytest.approx(557.9376050278543) and len(s.per_device) == 2


# -- the current tabulate ("fancy_grid") summary ---------------------------------
def test_tabulate_single_device_default():
    d = parse("gen_tabulate_single.log")
    assert d["variant"] == "ais_bench-tabulate" and d["features"]["table"]
    npu = d["npu_compute_time_ms"]
    # the table rounds to 4 places; the mean comes from the Throughput line, exact
    assert npu["mean"] == 3.5538000106811523
    assert (npu["min"], npu["max"], npu["median"], npu["p99"]) == (2.477, 3.937, 3.723, 3.9367)
    assert d["batch_size"] == 1 and d["throughput_ips"] == pytest.approx(281.38893494131406)
    assert d["h2d_latency_ms"] is None and not d["features"]["display_all_summary"]


def test_tabulate_display_all_summary():
    d = parse("gen_tabulate_display_all_bs8.log")
    assert d["features"]["display_all_summary"]
    assert d["batch_size"] == 8
    assert d["throughput_ips"] == pytest.approx(1000 * 8 / 3.5538000106811523)
    assert d["h2d_latency_ms"]["mean"] == 0.057 and d["d2h_latency_ms"]["p99"] == 0.015
    s = ab.parse_stdout((AB / "gen_tabulate_display_all_bs8.log").read_text())
    assert s.h2d_latency.mean == 0.057 and s.npu_compute_time.p99 == 3.9367 and s.batch_size == 8


def test_tabulate_multithread_rows():
    d = parse("gen_tabulate_multithread_display_all_bs4.log")
    assert d["variant"] == "ais_bench-tabulate" and d["batch_size"] == 4
    assert d["npu_compute_time_ms"]["mean"] == 3.616000032424927
    assert d["npu_compute_time_ms"]["min"] == 3.389
    assert d["throughput_ips"] == pytest.approx(1106.194680346161)


def test_tabulate_multidevice():
    d = parse("gen_tabulate_multidevice.log")
    assert d["variant"] == "ais_bench-tabulate" and d["features"]["multi_device"]
    assert d["throughput_ips"] == pytest.approx(557.9376050278543)
    assert [e["npu_compute_time_ms"]["p99"] for e in d["per_device"]] == [3.9367, 3.9134]
    assert [e["device_id"] for e in d["per_device"]] == [1, 2]
    assert d["per_device"][1]["npu_compute_time_ms"]["mean"] == 3.616000032424927


def test_tabulate_dymshape_range():
    d = parse("gen_tabulate_dymshape_range.log")
    dym = d["dymshape_range"]
    assert (dym["run_count"], dym["success_count"]) == (2, 2)
    assert dym["avg_throughput_ips"] == pytest.approx(278.96880251392713)
    assert [(r["dymshape"], r["throughput_ips"]) for r in dym["runs"]] == [("input:1,3,224,224", 281.3889),
                                                                            ("input:1,3,256,256", 276.5487)]
    assert d["throughput_ips"] is None  # several shapes: no one figure


def test_ansi_colour_and_crlf_are_ignored():
    text = (AB / "gen_tabulate_single.log").read_text().replace("[info]", "[\x1b[32minfo\x1b[m]")
    d = ab.parse_ais_bench_text(text.replace("\n", "\r\n"))
    assert d["throughput_ips"] == pytest.approx(281.38893494131406) and d["npu_compute_time_ms"]["p99"] == 3.9367


# -- 2022 releases and multi-thread ----------------------------------------------
def test_inference_tools_2022_05_inverted_formula_is_recomputed():
    d = parse("hand_inference_tools_2022.05.log")
    assert d["variant"] == "inference_tools-2022.05"
    assert d["printed_throughput"] == pytest.approx(1000 / 4.251 / 4)
    assert d["batch_size"] == 4 and d["batch_size_source"] == "implied by the printed throughput"
    assert d["throughput_ips"] == pytest.approx(1000 * 4 / 4.251)
    assert any("not images/s" in w for w in d["warnings"])


def test_ais_infer_2022_06_batch_not_printed():
    d = parse("hand_ais_infer_2022.06.log")
    assert d["variant"] == "ais_infer-2022.06"
    assert d["batch_size"] == 16
    assert d["throughput_ips"] == pytest.approx(1503.6005924204671)
    assert d["h2d_latency_ms"]["p99"] == pytest.approx(18.392877578735302)


def test_multithread_mean_only():
    d = parse("hand_ait_multithread_mean_only.log")
    assert d["variant"] == "ais_bench-2023-multithread" and d["features"]["multi_thread"]
    assert d["npu_compute_time_ms"]["mean"] == 1.8542 and d["npu_compute_time_ms"]["p99"] is None
    assert d["batch_size"] == 8 and d["throughput_ips"] == pytest.approx(4314.529177003559)


def test_mean_only_without_throughput_line_needs_the_batch():
    text = "\n".join(l for l in (AB / "hand_ait_multithread_mean_only.log").read_text().splitlines()
                     if "throughput" not in l)
    d = ab.parse_ais_bench_text(text)
    assert d["throughput_ips"] is None and any("pass batch_size" in w for w in d["warnings"])
    d = ab.parse_ais_bench_text(text, batch_size=8)
    assert d["throughput_ips"] == pytest.approx(1000 * 8 / 1.8542) and d["batch_size_source"] == "argument"


def test_caller_batch_overrides_and_warns():
    d = parse("ais_bench_2023_readme_default.log", batch_size=8)
    assert d["batch_size"] == 8
    assert d["throughput_ips"] == pytest.approx(1000 * 8 / 0.6610000133514404)
    assert any("ais_bench used batch 1" in w for w in d["warnings"])


def test_console_log_without_summary_names_the_file():
    path = AB / "hand_crash_no_summary.log"
    with pytest.raises(UserError) as e:
        ab.parse_ais_bench_file(path)
    msg = str(e.value)
    assert str(path) in msg and "no performance summary" in msg and "ACL: invalid parameter" in msg


# -- summary JSON ---------------------------------------------------------------
def test_json_P99_and_count():
    d = parse("gen_summary_P99_count.json")
    assert d["variant"] == "json-P99-count"
    npu = d["npu_compute_time_ms"]
    assert npu["p99"] == pytest.approx(3.6186) and npu["count"] == 8 and npu["mean"] == pytest.approx(3.5425)
    assert d["h2d_latency_ms"]["p99"] == pytest.approx(0.8193)
    assert d["batch_size"] == 8 and d["batch_size_source"] == "args in the summary"
    assert d["throughput_ips"] == pytest.approx(1000 * 8 / 3.5425)
    assert d["npu_compute_times_ms"] == [3.51, 3.49, 3.62, 3.55, 3.58, 3.47, 3.6, 3.52]


def test_json_P99_multithread_intervals():
    d = parse("gen_summary_P99_count_multithread.json")
    assert d["variant"] == "json-P99-count" and d["features"]["multi_thread"]
    assert len(d["npu_compute_times_ms"]) == 8 and d["npu_compute_times_ms"][0] == pytest.approx(3.51)
    assert d["npu_compute_time_ms"]["mean"] == pytest.approx(1.99125)  # merged intervals / count
    assert d["throughput_ips"] == pytest.approx(1000 * 8 / 1.99125)


def test_json_percentile_and_count_2023():
    d = parse("gen_summary_percentile_count_2023.json")
    assert d["variant"] == "json-percentile-count"
    assert d["batch_size"] == 16  # from "--batchsize=16" in argv
    assert d["npu_compute_time_ms"]["p99"] == pytest.approx(7.2372) and d["npu_compute_time_ms"]["count"] == 8
    assert d["throughput_ips"] == pytest.approx(1000 * 16 / 7.085)


def test_json_ait_multithread_mean_and_count():
    d = parse("gen_summary_ait_multithread_mean_count.json")
    assert d["variant"] == "json-mean-count-multithread"
    assert d["npu_compute_time_ms"]["mean"] == pytest.approx(1.99125) and d["npu_compute_time_ms"]["min"] is None
    assert d["npu_compute_time_ms"]["count"] == 8 and d["batch_size"] == 8  # ait's --batch-size
    assert d["throughput_ips"] == pytest.approx(1000 * 8 / 1.99125)


def test_json_sumary_2022_inverted_throughput():
    d = parse("gen_sumary_inference_tools_2022.05.json")
    assert d["variant"] == "json-sumary-2022"
    assert d["npu_compute_time_ms"]["count"] is None
    assert d["printed_throughput"] == pytest.approx(1000 / 4.251 / 4)
    assert d["batch_size"] == 4 and d["throughput_ips"] == pytest.approx(1000 * 4 / 4.251)


def test_parse_summary_json_reads_batch_from_argv():
    # ais_bench writes sys.argv (a list) as "args"; the first module only read a dict
    s = ab.parse_summary_json(AB / "gen_summary_P99_count.json")
    assert s.batch_size == 8 and s.npu_compute_time.p99 == pytest.approx(3.6186)
    assert s.npu_compute_time.count == 8 and s.args["batchsize"] == "8"
    assert s.as_metrics()["throughput_ips"] == pytest.approx(1000 * 8 / 3.5425)


def test_not_a_summary_json(tmp_path):
    p = tmp_path / "acc.json"
    p.write_text('{"title": "Overall statistical evaluation", "value": []}')
    with pytest.raises(UserError, match="not an ais_bench summary.*title"):
        ab.parse_ais_bench_json(p)


def test_argv_options_forms():
    opts = ab._argv_options(["main.py", "--batchsize=16", "--device", "0,1", "--pipeline", "--loop", "5"])
    assert opts == {"batchsize": "16", "device": "0,1", "pipeline": True, "loop": "5"}
    assert ab._batch_from_args({"dymBatch": "0", "batchsize": "4"}) == 4
    assert ab._batch_from_args({"dym-batch": "16"}) == 16
