"""The command line keeps its promises (issue 26): one exit-code table walked row by
row from the README, Ctrl-C and SIGTERM at any stage (a real MindSpore case
included), pytest's options passed through, exact --model / --batch-size selection,
and the small ones (--version, devices, export, plurals, help text).

Every run is `python -m harness` or `python -m pytest` in a subprocess, as a user
runs it; the store is read afterwards to see what was kept."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import ExitCode
from tests.conftest import REPO, color_classifier, color_images, run_pytest, toy_top1_baselines, write
from tests.test_bad_input_cli import FAST_TIMING, assert_clean, harness, seen, toy_suite
from tests.test_gate_history import run_series

pytest.importorskip("onnxruntime")


def exit_code_rows() -> list[tuple[int, str]]:
    """The README's exit-code table: (code, name) per row."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Exit codes"):]
    section = section[:section.index("\n## ", 4)]
    return [(int(c), n) for c, n in re.findall(r"^\| (\d+) \| ([A-Z_]+) \|", section, re.M)]


def test_readme_table_is_the_exit_code_enum():
    assert exit_code_rows() == [(int(c), c.name) for c in ExitCode]


# -- one walk per row of the README's table -----------------------------------------------------------------------

def _toy(root: Path, **kw) -> Path:
    color_classifier(root / "toy.onnx")
    return toy_suite(root, **kw)


def _pytest(root: Path, *args) -> subprocess.CompletedProcess:
    return run_pytest([str(a) for a in args], cwd=root)


def _cli(*args) -> tuple[int, str]:
    """A `harness` command over stores (gate, compare): its exit code and what it printed."""
    proc = subprocess.run([sys.executable, "-m", "harness", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    return proc.returncode, seen(proc)


def walk_ok(root: Path) -> None:
    _toy(root)
    assert_clean(harness("run", "suites", "--store", root / "r.sqlite", cwd=root), ExitCode.OK, "2 passed")
    assert_clean(_pytest(root, "suites", "--harness-store", root / "p.sqlite"), ExitCode.OK, "2 passed")
    run_series(root / "h.sqlite", [100.0] * 4)
    assert _cli("gate", "--store", root / "h.sqlite")[0] == ExitCode.OK


def walk_failed(root: Path) -> None:
    # a case that misses its documented figure: a colour classifier that is always wrong
    color_images(root / "data", per_class=2)
    color_classifier(root / "toy.onnx", permute=True)
    toy_top1_baselines(root / "baselines.yaml", 99.0, 0.5)
    write(root / "suites" / "toy" / "suite.yaml", """\
        model: se_resnext50
        source: {kind: onnx, path: ../../toy.onnx, num_classes: 3, weights: toy}
        input: {size: 32, preprocess: imagenet_resize256_crop224}
        export: [onnx]
        dataset: {kind: imagefolder, path: ../../data, num_images: 6}
        accuracy_baselines: [toy.top1]
        targets:
          - {device: cpu, runner: onnxruntime, format: onnx, batch_sizes: [3], stages: [accuracy]}
        """)
    assert_clean(harness("run", "suites", "-m", "accuracy", "--store", root / "r.sqlite", cwd=root),
                 ExitCode.FAILED, "1 failed", "misses >= 98.5")
    assert_clean(_pytest(root, "suites", "-m", "accuracy", "--harness-store", root / "p.sqlite"),
                 ExitCode.FAILED, "1 failed")
    # gate and compare: a 12% drop with a new artifact (the interrupted run: test_sigint_* below)
    ids = run_series(root / "h.sqlite", [100.0] * 8 + [88.0], sha=lambda i: ("cd" if i == 8 else "ab") * 32)
    rc, out = _cli("gate", "--store", root / "h.sqlite")
    assert rc == ExitCode.FAILED and "GATE FAIL" in out, out
    rc, out = _cli("compare", ids[7], ids[8], "--store", root / "h.sqlite")
    assert rc == ExitCode.FAILED and "COMPARISON FAIL" in out, out


def walk_usage(root: Path) -> None:
    _toy(root)
    assert_clean(harness("run", "suites", "--store", root / "r.sqlite", "--warmup", "-1", cwd=root),
                 ExitCode.USAGE, "--warmup -1")
    # pytest with the plugin: the same code (pytest's own would be 4)
    assert_clean(_pytest(root, "suites", "--harness-store", root / "r.sqlite", "--harness-warmup", "-1"),
                 ExitCode.USAGE, "--harness-warmup -1")
    assert_clean(harness("run", "suites", "--store", root / "r.sqlite", "--no-such-option", cwd=root),
                 ExitCode.USAGE, "--no-such-option")
    assert _cli("gate", "--history", "many")[0] == ExitCode.USAGE
    assert not (root / "r.sqlite").exists()


def walk_input(root: Path) -> None:
    f = _toy(root)
    f.write_text(f.read_text().replace("runner: onnxruntime", "runner: nosuch"))
    for p in (harness("run", "suites", "--store", root / "r.sqlite", cwd=root),
              _pytest(root, "suites", "--harness-store", root / "r.sqlite")):
        assert_clean(p, ExitCode.INPUT, "unknown runner 'nosuch'", "suites/toy/suite.yaml")
    rc, out = _cli("gate", "--store", root / "missing.sqlite")
    assert rc == ExitCode.INPUT and "missing.sqlite" in out, out


def walk_nothing_compared(root: Path) -> None:
    run_series(root / "h.sqlite", [100.0])  # one run: nothing earlier to hold it against
    rc, out = _cli("gate", "--store", root / "h.sqlite")
    assert rc == ExitCode.NOTHING_COMPARED and "GATE FAIL: 0 of 1 compared" in out, out


def walk_nothing_selected(root: Path) -> None:
    _toy(root)
    for p in (harness("run", "suites", "--store", root / "r.sqlite", "-m", "cpuu", cwd=root),
              _pytest(root, "suites", "--harness-store", root / "r.sqlite", "-m", "cpuu")):
        # a misspelt marker: the valid ones listed
        assert_clean(p, ExitCode.NOTHING_SELECTED, "no case selected from suites with -m 'cpuu'",
                     "-m names no known marker: cpuu; markers: cpu, gpu")
    assert_clean(harness("run", "suites", "--store", root / "r.sqlite", "--model", "toyy", cwd=root),
                 ExitCode.NOTHING_SELECTED, "--model toyy: no suite of that model here; models: toy")
    assert_clean(harness("run", "suites", "--store", root / "r.sqlite", "-m", "cpu and gpu", cwd=root),
                 ExitCode.NOTHING_SELECTED, "no case selected")
    assert not (root / "r.sqlite").exists()  # nothing ran: no run recorded


def walk_inconclusive(root: Path) -> None:
    ids = run_series(root / "h.sqlite", [100.0, 100.0, 100.0, 55.0],
                     contended=lambda i: [True, True, True] if i == 3 else None)
    rc, out = _cli("gate", "--store", root / "h.sqlite")
    assert rc == ExitCode.INCONCLUSIVE and "GATE INCONCLUSIVE" in out, out
    rc, out = _cli("compare", ids[2], ids[3], "--store", root / "h.sqlite")
    assert rc == ExitCode.INCONCLUSIVE and "COMPARISON INCONCLUSIVE" in out and "GATE" not in out, out


def walk_not_stored(root: Path) -> None:
    # the store takes the run but not its results (a database that went away after the run began)
    _toy(root)
    p = harness("run", "suites", "--store", root / "r.sqlite", cwd=root,
                prelude="import harness.results.store as st\n"
                        "def add(self, res):\n    raise st.StoreUnavailable('simulated: the database went away')\n"
                        "st.Store.add = add")
    assert_clean(p, ExitCode.NOT_STORED, "journal")


WALKS = {"OK": walk_ok, "FAILED": walk_failed, "USAGE": walk_usage, "INPUT": walk_input,
         "NOTHING_COMPARED": walk_nothing_compared, "NOTHING_SELECTED": walk_nothing_selected,
         "INCONCLUSIVE": walk_inconclusive, "NOT_STORED": walk_not_stored}


@pytest.mark.parametrize("code, name", [pytest.param(c, n, id=f"{c}-{n}") for c, n in exit_code_rows()])
def test_every_row_of_the_readme_exit_code_table(code, name, tmp_path):
    assert name in WALKS, f"README row {code} {name} has no walk here: add one to WALKS"
    WALKS[name](tmp_path)


# -- interrupts ---------------------------------------------------------------------------------------------------

def _start(root: Path, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.Popen([sys.executable, "-m", "harness", "run", "suites", *map(str, args)], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stored(store: Path) -> tuple[list[str], int]:
    """(run statuses, results) in the store, read while the run writes it."""
    if not store.exists():
        return [], 0
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
    try:
        return [r[0] for r in db.execute("SELECT status FROM runs")], db.execute(
            "SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:  # tables not made yet
        return [], 0
    finally:
        db.close()


def _wait(what, until, deadline: float, proc: subprocess.Popen):
    while time.monotonic() < deadline:
        got = until()
        if got:
            return got
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}:\n{proc.stdout.read()[-4000:]}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}:\n{proc.communicate()[0][-4000:]}")


def _kernel_cpu_s(pid: int) -> float:
    """CPU seconds MindSpore's kernel threads (KernelThread_*) have spent: > 0 once a graph computes."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            if not Path(f"/proc/{pid}/task/{tid}/comm").read_text().startswith("KernelThread"):
                continue
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


LONG_TIMING = "{warmup: 1, min_iterations: 3, min_duration_s: 200, max_duration_s: 240, budget_s: 240}"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to see MindSpore's threads start")
def test_sigint_while_mindspore_holds_it_ends_the_run_interrupted(tmp_path):
    """Two quick ONNX cases finish, then a real MindSpore case runs. While a MindSpore graph runs,
    MindSpore's handler holds SIGINT and sends the process SIGTERM (it exited 143 here, no summary,
    the run left `running`). Ctrl-C then must still end the run with 1, the summary, and the run
    `interrupted`, its two results kept. Each graph run of this case (resnet18, 112 px, batch 2)
    lasts far longer than the Python between two runs, so the SIGINT lands inside one."""
    pytest.importorskip("mindspore")
    pytest.importorskip("mindcv")
    _toy(tmp_path, folder="a_toy")  # collected first
    write(tmp_path / "suites" / "b_mindspore" / "suite.yaml", f"""\
        model: resnet18
        source: {{kind: mindcv, arch: resnet18, num_classes: 10}}
        input: {{size: 112, preprocess: imagenet_resize256_crop224}}
        export: []
        targets:
          - {{name: ms, device: cpu, runner: mindspore, format: native, batch_sizes: [2], stages: [throughput],
              timing: {LONG_TIMING}}}
        """)
    store = tmp_path / "r.sqlite"
    proc = _start(tmp_path, "--store", store, "--cache", tmp_path / "cache")
    deadline = time.monotonic() + 400
    _wait("the two ONNX cases to be stored", lambda: _stored(store)[1] == 2, deadline, proc)
    # the case's timing loop: MindSpore's kernel threads computing, graph run after graph run
    _wait("MindSpore's kernels to compute", lambda: _kernel_cpu_s(proc.pid) > 3.0, deadline, proc)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == ExitCode.FAILED, out[-4000:]
    # MindSpore's handler took the SIGINT and sent SIGTERM: ours turned that into the interrupt
    assert "KeyboardInterrupt: SIGTERM" in out, out[-4000:]
    assert "run " in out and ": 2 passed, 0 failed, 0 skipped, 0 error" in out, out[-4000:]
    assert "interrupted: the 2 results above stay stored" in out and "Traceback" not in out, out[-4000:]
    assert _stored(store) == (["interrupted"], 2)
    show = harness("show", "--store", store, "--color", "never", cwd=tmp_path)
    assert "(interrupted, started" in show.stdout, seen(show)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_between_and_inside_cases_end_the_run_interrupted(tmp_path, sig):
    """The same promise without a framework holding the signal: kill PID and Ctrl-C alike."""
    f = _toy(tmp_path)
    f.write_text(f.read_text().replace(FAST_TIMING, f"timing: {LONG_TIMING}"))
    store = tmp_path / "r.sqlite"
    proc = _start(tmp_path, "--store", store)
    deadline = time.monotonic() + 300
    _wait("the export case to be stored", lambda: _stored(store)[1] == 1, deadline, proc)
    time.sleep(1.0)  # inside the long throughput case
    proc.send_signal(sig)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == ExitCode.FAILED, out[-4000:]
    assert f"KeyboardInterrupt: {sig.name}" in out and "1 passed" in out, out[-4000:]
    assert _stored(store) == (["interrupted"], 1)


def test_a_swallowed_interrupt_still_stops_the_run():
    """A framework that swallows the KeyboardInterrupt (a Ctrl-C during MindSpore's ONNX export was
    lost so) does not keep the run going: the signal is remembered and raised when the case returns."""
    from harness.plugin.interrupts import Interrupts

    before = signal.getsignal(signal.SIGTERM)
    guard = Interrupts()
    guard.hold()
    try:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs here
        except BaseException:  # noqa: BLE001 - what a framework does
            pass
        with pytest.raises(KeyboardInterrupt, match="SIGTERM: the run stops"):
            guard.check()
    finally:
        guard.release()
    assert signal.getsignal(signal.SIGTERM) is before


# -- pytest's options pass through ------------------------------------------------------------------------------

def _items(p: subprocess.CompletedProcess) -> list[str]:
    return [line for line in p.stdout.splitlines() if "::" in line]


def test_model_and_batch_size_select_exactly_from_the_shipped_suites(tmp_path):
    every = _items(run_pytest(["suites", "-m", "cpu", "--collect-only", "-q"], cwd=REPO))
    want = [i for i in every if i.startswith("suites/xception/") and i.endswith("-bs1]")]
    assert want and any(i.endswith("-bs16]") for i in every if i.startswith("suites/xception/"))
    p = harness("run", "suites", "--model", "xception", "--batch-size", "1", "-m", "cpu", "--collect-only",
                "--store", tmp_path / "r.sqlite", cwd=REPO)
    assert p.returncode == ExitCode.OK and _items(p) == want, seen(p)
    # the plugin's own options, repeatable
    p = run_pytest(["suites", "-m", "cpu", "--collect-only", "-q", "--harness-model", "xception",
                    "--harness-model", "efficientnet_b0", "--harness-batch-size", "1", "--harness-batch-size", "4"],
                   cwd=REPO)
    assert _items(p) == [i for i in every if i.split("/")[1] in ("xception", "efficientnet_b0")
                         and re.search(r"-bs(1|4)\]$", i)], p.stdout
    assert not (tmp_path / "r.sqlite").exists()


def test_two_xdist_workers_through_harness_run(tmp_path):
    pytest.importorskip("xdist")
    _toy(tmp_path, batch_sizes="[1, 2]")
    store = tmp_path / "r.sqlite"
    p = harness("run", "suites", "-m", "cpu", "-n", "2", "--store", store, cwd=tmp_path)
    assert_clean(p, ExitCode.OK, "(2 workers): finished, 3 results")
    db = sqlite3.connect(store)
    [(status, env)] = db.execute("SELECT status, env FROM runs").fetchall()
    db.close()
    assert status == "finished" and json.loads(env)["workers"] == 2


def test_pytest_options_mean_what_they_mean_to_pytest(tmp_path):
    _toy(tmp_path)
    store = tmp_path / "r.sqlite"
    p = harness("run", "suites", "--collect-only", "--store", store, cwd=tmp_path)
    assert p.returncode == ExitCode.OK and _items(p) == ["suites/toy/suite.yaml::export[onnx]",
                                                         "suites/toy/suite.yaml::throughput[cpu-ort-bs1]"], seen(p)
    assert not store.exists()
    p = harness("run", "suites", "-v", "-x", "-p", "no:cacheprovider", "-k", "throughput", "--store", store,
                cwd=tmp_path)
    assert_clean(p, ExitCode.OK, "collected 2 items / 1 deselected / 1 selected", "1 passed")
    # -p no:xdist takes -n away: pytest refuses it, and harness run says where -n comes from
    p = harness("run", "suites", "-p", "no:xdist", "-n", "2", "--store", store, cwd=tmp_path)
    assert_clean(p, ExitCode.USAGE, "pytest-xdist")


def test_skip_reasons_have_their_own_name(tmp_path):
    if shutil.which("npu-smi"):
        pytest.skip("this host has npu-smi: its 310P case would run")
    f = _toy(tmp_path)
    f.write_text(f.read_text() + "  - {name: npu, device: ascend310p, runner: ais_bench, format: om, "
                                 "batch_sizes: [1], stages: [throughput]}\n")
    p = harness("run", "suites", "-m", "ascend310p", "--skip-reasons", "--store", tmp_path / "r.sqlite",
                cwd=tmp_path)
    assert_clean(p, ExitCode.OK, "SKIPPED [1]", "no Ascend 310P: npu-smi not found")


# -- the small ones ---------------------------------------------------------------------------------------------

def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and re.match(r"harness \d+\.\d+\.\d+ \(", capsys.readouterr().out)


def test_every_option_has_help_and_no_literal_percent_signs():
    from harness.cli.main import build_parser

    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [f"{name} {a.option_strings or a.dest}" for name, p in sub.choices.items() for a in p._actions
               if not a.help and not isinstance(a, argparse._HelpAction)]
    assert not missing
    for name, p in sub.choices.items():
        assert "%%" not in p.format_help(), name


def test_devices_prints_no_none_and_the_mindspore_targets_this_host_can_use(capsys, monkeypatch):
    from harness.runners import devices

    rep = devices.DeviceReport(mindspore_targets=["CPU", "GPU", "Ascend"],
                               onnxruntime_providers=["CPUExecutionProvider"])
    rep.present = {"cpu": True, "gpu": False, "ascend310p": False}
    rep.why_absent = {"gpu": "no GPU: nvidia-smi not found", "ascend310p": "no Ascend 310P: npu-smi not found"}
    monkeypatch.setattr(devices, "detect", lambda: rep)
    assert main(["devices"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "None" not in out and not re.search(r"yes: *$", out, re.M), out
    assert re.search(r"^cpu +yes: .+, \d+ logical cores$", out, re.M), out
    assert "mindspore targets: CPU (this build also carries GPU, Ascend; no device here for them)" in out
    rep.present["gpu"] = True
    rep.details = {"gpu": "GPU 0: T4"}
    rep.npu = devices.NpuInfo(chips=["310P3"], npu_smi_version="23.0.0")
    assert main(["devices"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "mindspore targets: CPU, GPU (this build also carries Ascend; no device here for it)" in out
    assert "npu-smi: npu-smi 23.0.0; CANN not found" in out and "None" not in out


def test_export_that_fails_writes_nothing_and_says_how_to_fix(tmp_path, capsys):
    from harness.results import Result
    from harness.results.store import Store

    store = Store(tmp_path / "r.sqlite")
    rid = store.begin_run({"hostname": "h"}, [])
    store.add(Result(model="toy", case="export[onnx]", stage="export", status="passed", device="cpu", run_id=rid))
    store.finish_run(rid)
    store.close()
    out = tmp_path / "run.json"
    assert main(["export", "--store", str(tmp_path / "r.sqlite"), "--out", str(out)]) == ExitCode.FAILED
    printed = capsys.readouterr()
    assert not out.exists() and "0 benchmarks" not in printed.out
    assert f"{out} not written" in printed.err and "fix:" in printed.err
    csv = tmp_path / "r.csv"
    assert main(["export", "--format", "csv", "--store", str(tmp_path / "r.sqlite"), "--out", str(csv)]) == ExitCode.OK
    assert f"{csv}: 1 result\n" in capsys.readouterr().out  # one result, not "1 results"
    assert main(["compare", "--list", "--store", str(tmp_path / "r.sqlite")]) == ExitCode.OK
    assert " 1 result " in capsys.readouterr().out
