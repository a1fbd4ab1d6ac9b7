"""Faults and bad input at the command line (issue 11): each class gets one clear
error naming the file and the fix, the README's exit code, no traceback, and
loses nothing already measured. Every test runs `python -m harness` (or
pytest with the plugin) in a subprocess and checks what the user sees."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.errors import ExitCode
from tests.conftest import REPO, color_classifier, write

pytest.importorskip("onnxruntime")

FAST_TIMING = "timing: {warmup: 1, min_iterations: 2, min_duration_s: 0.01, budget_s: 0.3, min_repetition_s: 0.01}"


def harness(*args, cwd: Path, prelude: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m harness ARGS` as a user runs it. ``prelude``: Python run first in
    the same process (to simulate a fault that cannot be arranged from outside)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PYTEST_ADDOPTS", None)
    if prelude is None:
        cmd = [sys.executable, "-m", "harness", *map(str, args)]
    else:
        cmd = [sys.executable, "-c", f"import sys\n{prelude}\nfrom harness.cli.main import main\n"
                                     f"sys.exit(main(sys.argv[1:]))", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def seen(p: subprocess.CompletedProcess) -> str:
    return p.stdout + p.stderr


def assert_clean(p: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    """Exit ``code``, every needle shown, and no traceback."""
    out = seen(p)
    assert p.returncode == code, f"exit {p.returncode}, wanted {code}:\n{out}"
    assert "Traceback" not in out, out
    for n in needles:
        assert n in out, f"{n!r} not in:\n{out}"


def toy_suite(root: Path, model_file: str = "toy.onnx", *, batch_sizes="[1]", stages="[throughput]",
              size: int = 32, extra: str = "", folder: str = "toy") -> Path:
    return write(root / "suites" / folder / "suite.yaml", f"""\
        model: toy
        source: {{kind: onnx, path: ../../{model_file}, num_classes: 3}}
        input: {{size: {size}, preprocess: imagenet_resize256_crop224}}
        export: [onnx]
        {FAST_TIMING}
        {extra}
        targets:
          - {{name: cpu-ort, device: cpu, runner: onnxruntime, format: onnx, batch_sizes: {batch_sizes},
              stages: {stages}}}
        """)


def nan_classifier(path: Path) -> Path:
    """An ONNX graph that runs fine and answers NaN for every class."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
             helper.make_node("Mul", ["flat", "nan"], ["class"])]
    graph = helper.make_graph(
        nodes, "nan_classifier", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("class", TensorProto.FLOAT, ["N", 3])],
        initializer=[helper.make_tensor("nan", TensorProto.FLOAT, [3], [float("nan")] * 3)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def flat_dataset(root: Path, labels: list[int], *, label_text: str | None = None, encoding="utf-8") -> Path:
    """Flat folder of PNGs whose dominant colour is their label, plus val_label.txt."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, lab in enumerate(labels):
        img = rng.integers(0, 90, size=(40, 40, 3))
        img[..., max(lab, 0) % 3] = 220
        Image.fromarray(img.astype(np.uint8)).save(root / f"img_{i}.png")
        lines.append(f"img_{i}.png {lab}")
    (root / "val_label.txt").write_bytes((label_text or "\n".join(lines) + "\n").encode(encoding))
    return root


def records(store: Path) -> list[dict]:
    db = sqlite3.connect(store)
    try:
        return [json.loads(r[0]) for r in db.execute("SELECT record FROM results")]
    finally:
        db.close()


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """A folder with the toy model, its suite and a store holding one run."""
    root = tmp_path_factory.mktemp("measured")
    color_classifier(root / "toy.onnx")
    toy_suite(root)
    p = harness("run", "suites", "--store", root / "r.sqlite", cwd=root)
    assert p.returncode == 0, seen(p)
    return root


# -- 2. every output path ------------------------------------------------------------------------------

OUTPUT_COMMANDS = {
    "report --out": ("report", "--store", "r.sqlite", "--out", "{bad}"),
    "gate --json": ("gate", "--store", "r.sqlite", "--json", "{bad}"),
    "compare --json": ("compare", "r.sqlite", "r.sqlite", "--json", "{bad}"),
    "export --out": ("export", "--store", "r.sqlite", "--out", "{bad}"),
    "export csv --out": ("export", "--format", "csv", "--store", "r.sqlite", "--out", "{bad}"),
    "bundle --out": ("bundle", "--store", "r.sqlite", "--out", "{bad}"),
    "claims --json": ("claims", "--published-only", "--baselines", str(REPO / "baselines.yaml"), "--json", "{bad}"),
    "run --report": ("run", "suites", "--store", "r2.sqlite", "--report", "{bad}"),
}


@pytest.mark.parametrize("kind", ["under a file", "a directory"])
@pytest.mark.parametrize("command", list(OUTPUT_COMMANDS))
def test_unwritable_output_path_is_one_error_exit_3_before_the_work(measured, command, kind):
    # a path under a regular file cannot be made by anyone (root included); a directory is not a file
    bad = measured / "r.sqlite" / "out.file" if kind == "under a file" else measured / "suites"
    args = [a.replace("{bad}", str(bad)) for a in OUTPUT_COMMANDS[command]]
    p = harness(*args, cwd=measured)
    assert_clean(p, ExitCode.INPUT, str(bad), "fix:")
    assert len(p.stderr.strip().splitlines()) <= 3, p.stderr  # one error and its fix
    out = seen(p)
    # checked before the work: no verdict printed, nothing measured
    assert "GATE" not in out and "PASS" not in out and "passed" not in out, out
    assert not (measured / "r2.sqlite").exists()


@pytest.mark.parametrize("command", ["gate --json", "compare --json", "claims --json"])
def test_side_output_failing_after_the_verdict_keeps_the_verdicts_exit_code(measured, command):
    # the output check passes (disabled here, as if the folder vanished after it): the verdict stands
    args = [a.replace("{bad}", str(measured / "r.sqlite" / "x.json")) for a in OUTPUT_COMMANDS[command]]
    plain = harness(*args[:-2], cwd=measured)
    late = harness(*args, cwd=measured, prelude="import harness.fsio as f, harness.cli.reports as r, "
                   "harness.cli.results as s\nr.check_writable = s.check_writable = lambda *a, **k: None")
    assert plain.returncode in (ExitCode.OK, ExitCode.FAILED, ExitCode.NOTHING_COMPARED, ExitCode.INCONCLUSIVE), \
        seen(plain)
    assert_clean(late, plain.returncode, "side output not written", "x.json")
    assert plain.stdout == late.stdout  # the same verdict, printed in full


def test_run_report_failing_at_the_end_loses_no_result_and_keeps_the_exit_code(measured, tmp_path):
    store = tmp_path / "r.sqlite"
    p = harness("run", "suites", "--store", store, "--report", measured / "r.sqlite" / "report.html",
                cwd=measured, prelude="import harness.cli.main, harness.plugin as pl\n"
                                      "m = sys.modules['harness.cli.main']  # the package re-exports main()\n"
                                      "m.check_writable = pl.check_writable = lambda *a, **k: None")
    assert_clean(p, ExitCode.OK, "report not written", "report.html")
    assert {r["status"] for r in records(store)} == {"passed"} and len(records(store)) == 2


# -- 4. exit codes ---------------------------------------------------------------------------------------

def test_readme_exit_code_table_names_every_code():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Exit codes"):]
    section = section[:section.index("\n## ", 4)]
    for code in ExitCode:
        assert f"| {int(code)} |" in section, (code, section)


@pytest.mark.parametrize("case, body, code, needle", [
    ("unknown runner", "runner: nosuch", ExitCode.INPUT, "unknown runner 'nosuch'"),
    ("unknown architecture", "arch", ExitCode.INPUT, "unknown source.arch"),
    ("malformed YAML", "yaml", ExitCode.INPUT, "not valid YAML"),
])
def test_run_bad_suite_exits_3(tmp_path, case, body, code, needle):
    color_classifier(tmp_path / "toy.onnx")
    f = toy_suite(tmp_path)
    text = f.read_text()
    if body == "arch":
        text = text.replace("{kind: onnx, path: ../../toy.onnx, num_classes: 3}", "{kind: mindcv, arch: nosucharch}")
    elif body == "yaml":
        text = text.replace("targets:", "targets: [")
    else:
        text = text.replace("runner: onnxruntime", body)
    f.write_text(text)
    assert_clean(harness("run", "suites", "--store", tmp_path / "r.sqlite", cwd=tmp_path), code, needle,
                 "suites/toy/suite.yaml")


def test_run_collection_error_through_pytest_exits_3(tmp_path):
    # a suite the CLI's own check cannot see (it lives below a folder passed to pytest as it is): pytest
    # collects it, fails on it, and `harness run` still says 3, not 1
    color_classifier(tmp_path / "toy.onnx")
    toy_suite(tmp_path)
    bad = write(tmp_path / "more" / "deep" / "x" / "suite.yaml", "model: m\nsource: {kind: onnx}\ntargets: []\n")
    p = harness("run", "suites", "--store", tmp_path / "r.sqlite", "--", str(tmp_path / "more"), cwd=tmp_path)
    assert_clean(p, ExitCode.INPUT, str(bad), "bad input, exit 3")


def test_run_truncated_checkpoint_exits_3(tmp_path):
    pytest.importorskip("mindspore")
    pytest.importorskip("mindcv")
    ckpt = tmp_path / "trained.ckpt"
    ckpt.write_bytes(b"\x08\x01\x12" * 100)  # the first bytes of a checkpoint's protobuf, cut short
    f = write(tmp_path / "suites" / "m" / "suite.yaml", """\
        model: efficientnet_b0
        source: {kind: mindcv, arch: efficientnet_b0, checkpoint: ../../trained.ckpt}
        export: [onnx]
        targets: []
        """)
    store = tmp_path / "r.sqlite"
    p = harness("run", "suites", "--store", store, "-m", "export", cwd=tmp_path, timeout=600)
    assert_clean(p, ExitCode.INPUT, "trained.ckpt: cannot read MindSpore checkpoint", "bad input, exit 3")
    [rec] = records(store)
    assert rec["status"] == "error" and f.exists()


def test_run_selection_and_usage_codes(measured, tmp_path):
    assert_clean(harness("run", "suites", "--store", tmp_path / "r.sqlite", "-m", "gpu and cpu", cwd=measured),
                 ExitCode.NOTHING_SELECTED, "no case selected")
    assert_clean(harness("run", "suites", "--store", tmp_path / "r.sqlite", "--", "--no-such-option",
                         cwd=measured), ExitCode.USAGE)


# -- 5. encodings ------------------------------------------------------------------------------------------

def test_latin1_suite_is_one_error_with_line_and_fix(tmp_path):
    f = tmp_path / "suites" / "toy" / "suite.yaml"
    f.parent.mkdir(parents=True)
    f.write_bytes("model: t\u00e9st\nsource: {kind: onnx, path: m.onnx, num_classes: 3}\ntargets: []\n"
                  .encode("latin-1"))
    for cmd in ("validate", "run"):
        assert_clean(harness(cmd, "suites", cwd=tmp_path), ExitCode.INPUT, "suites/toy/suite.yaml", "not UTF-8",
                     "line 1, column 9", "iconv")


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_suite_with_a_byte_order_mark_is_read(tmp_path, encoding):
    f = tmp_path / "suites" / "toy" / "suite.yaml"
    f.parent.mkdir(parents=True)
    f.write_bytes("model: t\u00e9st\nsource: {kind: onnx, path: m.onnx, num_classes: 3}\ntargets: []\n"
                  .encode(encoding))
    assert_clean(harness("validate", "suites", cwd=tmp_path), ExitCode.OK, "t\u00e9st")


def test_latin1_baselines_and_thresholds_are_one_error(measured, tmp_path):
    b = tmp_path / "baselines.yaml"
    b.write_bytes("schema_version: 1\n# r\u00e9f\u00e9rence\nbaselines: []\nclaims: []\n".encode("latin-1"))
    assert_clean(harness("validate", measured / "suites", "--baselines", b, cwd=tmp_path), ExitCode.INPUT,
                 str(b), "baselines file is not UTF-8", "line 2")
    assert_clean(harness("run", measured / "suites", "--baselines", b, "--store", tmp_path / "r.sqlite",
                         cwd=tmp_path), ExitCode.INPUT, str(b), "not UTF-8")
    assert not (tmp_path / "r.sqlite").exists()
    t = tmp_path / "gate.yaml"
    t.write_bytes("schema_version: 1\n# seuil \u00e0 3%\nrules: []\n".encode("latin-1"))
    assert_clean(harness("gate", "--store", measured / "r.sqlite", "--thresholds", t, cwd=tmp_path),
                 ExitCode.INPUT, str(t), "thresholds file is not UTF-8")


def test_latin1_label_file_is_one_error(tmp_path):
    color_classifier(tmp_path / "toy.onnx")
    flat_dataset(tmp_path / "val", [0, 1, 2], label_text="img_0.png 0\nimg_1.png 1\nimg_2.png 2\n# \u00e9\n",
                        encoding="latin-1")
    toy_suite(tmp_path, stages="[accuracy]", extra="dataset: {kind: flat, path: ../../val, "
                                                   "label_file: ../../val/val_label.txt}")
    p = harness("run", "suites", "--store", tmp_path / "r.sqlite", cwd=tmp_path)
    assert_clean(p, ExitCode.INPUT, "/val/val_label.txt: this label file is not UTF-8", "line 4")


# -- 6. models that produce garbage ---------------------------------------------------------------------------

def test_truncated_user_onnx_fails_export_with_the_users_fix(tmp_path):
    color_classifier(tmp_path / "full.onnx")
    data = (tmp_path / "full.onnx").read_bytes()
    (tmp_path / "toy.onnx").write_bytes(data[: len(data) // 2])
    toy_suite(tmp_path, stages="[throughput]")
    store = tmp_path / "r.sqlite"
    p = harness("run", "suites", "--store", store, "-m", "export", cwd=tmp_path)
    assert_clean(p, ExitCode.INPUT, str(tmp_path / "toy.onnx"), "not a usable ONNX model", "source.path")
    assert "delete the cached artifact" not in seen(p)
    [rec] = records(store)
    assert rec["case"] == "export[onnx]" and rec["status"] == "error"


def test_nan_model_throughput_is_flagged_naming_the_model_and_kept(tmp_path):
    nan_classifier(tmp_path / "toy.onnx")
    toy_suite(tmp_path)
    store = tmp_path / "r.sqlite"
    p = harness("run", "suites", "--store", store, "-m", "throughput", cwd=tmp_path)
    assert_clean(p, ExitCode.INPUT, str(tmp_path / "toy.onnx"), "outputs are not finite",
                 "first timed run: 3 of 3 values NaN/inf", "last timed run")
    [rec] = records(store)
    assert rec["status"] == "error"
    # the measurement is kept as evidence, flagged
    assert rec["metrics"]["throughput_ips"] > 0 and rec["metrics"]["nonfinite_outputs"]["first"]


def test_nan_model_accuracy_error_names_the_model_file(tmp_path):
    nan_classifier(tmp_path / "toy.onnx")
    flat_dataset(tmp_path / "val", [0, 1, 2])
    toy_suite(tmp_path, stages="[accuracy]", extra="dataset: {kind: flat, path: ../../val, "
                                                   "label_file: ../../val/val_label.txt}")
    p = harness("run", "suites", "--store", tmp_path / "r.sqlite", "-m", "accuracy", cwd=tmp_path)
    assert_clean(p, ExitCode.INPUT, "NaN/inf logits")
    err = next(line for line in seen(p).splitlines() if "NaN/inf logits" in line)
    assert f"{tmp_path / 'toy.onnx'} (onnxruntime output" in err, err


# -- 7. overrides pass the suite's validation --------------------------------------------------------------------

def test_bad_timing_overrides_are_refused_by_harness_run(measured, tmp_path):
    store = tmp_path / "r.sqlite"
    p = harness("run", "suites", "--store", store, "--warmup", "-1", "--min-iterations", "0",
                "--min-duration", "-5", cwd=measured)
    assert_clean(p, ExitCode.USAGE, "--warmup -1", "--min-iterations 0", "--min-duration -5", "fix:")
    assert not store.exists()  # nothing ran, nothing stored


def test_bad_timing_overrides_are_refused_by_pytest(measured, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PYTEST_ADDOPTS", None)
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "harness.plugin", "-p", "no:cacheprovider", "suites",
                        "--harness-store", str(tmp_path / "r.sqlite"), "--harness-warmup", "-1"],
                       cwd=measured, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == ExitCode.USAGE, seen(p)  # the harness's table, not pytest's 4
    assert "--harness-warmup -1" in p.stderr and "Traceback" not in seen(p)
    assert not (tmp_path / "r.sqlite").exists()


def test_valid_timing_overrides_are_applied(measured, tmp_path):
    store = tmp_path / "r.sqlite"
    p = harness("run", "suites", "--store", store, "-m", "throughput", "--warmup", "0", "--min-iterations", "4",
                cwd=measured)
    assert_clean(p, ExitCode.OK)
    [rec] = records(store)
    assert rec["metrics"]["warmup_iterations"] == 0


# -- 8. messages that point the right way -----------------------------------------------------------------------

@pytest.mark.parametrize("label, needle", [(-1, "label -1 of img_1.png is out of range"),
                                           (6, "label 6 of img_1.png is out of range")])
def test_bad_label_names_the_label_file_and_line(tmp_path, label, needle):
    color_classifier(tmp_path / "toy.onnx")
    flat_dataset(tmp_path / "val", [0, label, 2])
    toy_suite(tmp_path, stages="[accuracy]", extra="dataset: {kind: flat, path: ../../val, "
                                                   "label_file: ../../val/val_label.txt}")
    p = harness("run", "suites", "--store", tmp_path / "r.sqlite", cwd=tmp_path)
    assert_clean(p, ExitCode.INPUT, f"/val/val_label.txt: line 2: {needle}", "3-class model")


def test_unknown_nested_key_fix_lists_that_sections_keys(tmp_path):
    write(tmp_path / "suites" / "m" / "suite.yaml", """\
        model: m
        source: {kind: onnx, path: m.onnx, num_classes: 3}
        targets:
          - {device: cpu, runner: onnxruntime, format: onnx, batch_size: 4}
        """)
    p = harness("validate", "suites", cwd=tmp_path)
    assert_clean(p, ExitCode.INPUT, "suites/m/suite.yaml", "targets.0.batch_size: unknown key",
                 "targets.0.batch_size: did you mean batch_sizes?", "targets.0 takes: name, device, runner")


def test_run_accepts_k_as_pytest_does(measured, tmp_path):
    store = tmp_path / "r.sqlite"
    p = harness("run", "suites", "--store", store, "-k", "throughput", cwd=measured)
    assert_clean(p, ExitCode.OK, "1 passed, 1 deselected")
    assert [r["case"] for r in records(store)] == ["throughput[cpu-ort-bs1]"]
    assert_clean(harness("run", "suites", "--store", store, "-k", "nomatch", cwd=measured),
                 ExitCode.NOTHING_SELECTED, "no case selected from suites with -k 'nomatch'")


# -- 9. limits ------------------------------------------------------------------------------------------------------

def test_batch_that_cannot_fit_is_refused_with_its_estimate(tmp_path):
    color_classifier(tmp_path / "toy.onnx")
    toy_suite(tmp_path, batch_sizes="[1, 1000000]", size=224)
    store = tmp_path / "r.sqlite"
    p = harness("run", "suites", "--store", store, "-m", "throughput", cwd=tmp_path, timeout=120)
    # 1e6 x 3 x 224 x 224 float32 inputs alone are 560.8 GiB
    assert_clean(p, ExitCode.INPUT, "batch 1000000 cannot fit in memory", "input 560.8 GiB", "available",
                 "smaller batch_sizes")
    recs = {r["batch_size"]: r for r in records(store)}
    assert recs[1]["status"] == "passed"  # the case that fits ran, and its result is kept
    assert recs[1000000]["status"] == "error" and "cannot fit" in recs[1000000]["reason"]
