"""`harness readme`: markdown tables between markers, and --check for CI."""

from __future__ import annotations

from pathlib import Path

from report_fixtures import make_history_store

from harness.cli import main

REPO = Path(__file__).resolve().parents[1]
BASELINES = str(REPO / "baselines.yaml")
DOC = """# My zoo

<!-- harness:table kind=throughput model=se_resnext50 source=documented document=004 -->
stale text
<!-- harness:end -->

Tail kept.
"""


def test_committed_readme_is_up_to_date(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["readme", "README.md", "--check"]) == 0, capsys.readouterr().out


def test_update_then_check(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(DOC)
    assert main(["readme", str(readme), "--check", "--baselines", BASELINES]) == 1
    out = capsys.readouterr().out
    assert "1 table(s) out of date (lines 3)" in out and "-stale text" in out
    assert readme.read_text() == DOC  # check mode writes nothing
    assert main(["readme", str(readme), "--baselines", BASELINES]) == 0
    text = readme.read_text()
    # the fourth document's shape: batch rows, device columns, ratio columns, a best-batch row
    assert "| bs | 310 | 310P | T4 | 310P/310 (device scope) | 310P/T4 (device scope) |" in text
    assert "| bs4 | 941.04 | 1804.86 | 750.772 | 1.9179 | 2.4040 |" in text
    assert "| best bs | 1113.52 (bs16) | 1804.86 (bs4) | 1054.064 (bs64) |" in text
    assert text.startswith("# My zoo\n") and text.endswith("Tail kept.\n")
    assert main(["readme", str(readme), "--check", "--baselines", BASELINES]) == 0


def test_measured_tables_from_the_store(tmp_path, capsys, monkeypatch):
    store = make_history_store(tmp_path / "h.sqlite", runs=2, models=("se_resnext50",), batches=(1, 8),
                               devices=(("cpu", "onnxruntime", "host", 12.0), ("gpu", "onnxruntime", "host", 900.0)))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- harness:table kind=throughput model=se_resnext50 source=measured "
                      "ratios=gpu/cpu -->\n<!-- harness:end -->\n"
                      "<!-- harness:table kind=accuracy model=se_resnext50 source=measured -->\n<!-- harness:end -->\n")
    monkeypatch.setenv("HARNESS_STORE", str(tmp_path / "none.sqlite"))
    assert main(["readme", str(readme), "--baselines", BASELINES]) == 3  # measured tables need a store
    assert "none.sqlite: results store not found" in capsys.readouterr().err
    assert main(["readme", str(readme), "--baselines", BASELINES, "--store", str(store)]) == 0
    text = readme.read_text()
    assert "| bs | GPU (gpu-onnxruntime-fp32, host scope) | CPU (cpu-onnxruntime-fp32, host scope) | GPU/CPU (host scope) |" \
        in text
    assert "| bs8 Top1 | 79.000 |" in text and "best bs" in text


def test_bad_readmes_are_named_and_untouched(tmp_path, capsys):
    cases = {"plain.md": "# no markers here\n",
             "open.md": "<!-- harness:table kind=throughput model=se_resnext50 -->\nx\n",
             "unknown.md": "<!-- harness:table kind=throughput model=se_resnext50 colour=red -->\n<!-- harness:end -->\n"}
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        assert main(["readme", str(path), "--baselines", BASELINES]) == 3
        err = capsys.readouterr().err
        assert str(path) in err
        assert path.read_text() == text
    assert main(["readme", str(tmp_path / "missing.md"), "--baselines", BASELINES]) == 3


def _mixed_store(path, extra=()):
    """310P by ONNX Runtime (host scope) beside 310 by ais_bench (device scope)
    of the same ONNX, plus `extra` (device, runner, scope, img/s) columns."""
    from report_fixtures import env, latencies, throughput_result

    import numpy as np

    from harness.results.store import Store

    rng = np.random.default_rng(0)
    store = Store(path)
    run_id = store.begin_run(env(), ["harness", "run"])
    for device, runner, scope, ips in (("ascend310p", "onnxruntime", "host", 1600.0),
                                       ("ascend310", "ais_bench", "device", 1000.0), *extra):
        for bs in (1, 8):
            store.add(throughput_result(run_id, "se_resnext50", device, runner, scope, bs,
                                        latencies(rng, ips, bs, 10)))
    store.finish_run(run_id, "finished")
    store.close()
    return path


def _render(tmp_path, marker, store=None):
    readme = tmp_path / "README.md"
    readme.write_text(f"{marker}\n<!-- harness:end -->\n")
    args = ["readme", str(readme), "--baselines", BASELINES] + (["--store", str(store)] if store else [])
    assert main(args) == 0
    return readme.read_text()


def test_readme_ratio_needs_the_same_timing_scope(tmp_path):
    store = _mixed_store(tmp_path / "s.sqlite")
    text = _render(tmp_path, "<!-- harness:table kind=throughput model=se_resnext50 source=measured "
                             "ratios=ascend310p/ascend310 -->", store)
    ratio_cells = [line.split("|")[-2].strip() for line in text.splitlines() if line.startswith("| bs")
                   or line.startswith("| best")][1:]
    assert ratio_cells == ["n/c", "n/c", "n/c"], text
    assert "not comparable: timing scope host vs device" in text


def test_readme_documented_t4_ratio_says_its_scope_is_assumed(tmp_path):
    text = _render(tmp_path, "<!-- harness:table kind=throughput model=se_resnext50 source=documented "
                             "document=004 -->")
    assert "| 310P/310 (device scope) | 310P/T4 (device scope) |" in text
    assert "310P/T4 (device scope): comparable if the T4 figures are device compute only — assumed." in text
    assert "310P/310 (device scope):" not in text  # documented scope: no assumption to state


def test_readme_leaves_null_runner_figures_out(tmp_path):
    store = _mixed_store(tmp_path / "s.sqlite", extra=(("cpu", "null", "host", 1e6),))
    text = _render(tmp_path, "<!-- harness:table kind=throughput model=se_resnext50 source=measured -->", store)
    assert "cpu-null" not in text and "CPU" not in text and "null-runner results left out" in text
