"""The shipped suites, suite validation, device detection parsing and the CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.runners.devices import family_of_chip, parse_npu_smi_chips
from harness.errors import ExitCode, UserError
from harness.plan import build_plan, read_suite
from harness.config.suite import find_suites, load_suite
from tests.conftest import REPO, write


def test_shipped_suites_cover_the_three_models_on_every_device():
    suites = [read_suite(p) for p in find_suites([REPO / "suites"])]  # with the stages' sections (train:)
    assert sorted(s.model for s in suites) == ["efficientnet_b0", "se_resnext50", "xception"]
    for s in suites:
        cases = build_plan(s)
        markers = {m for c in cases for m in c.markers}
        assert {"cpu", "ascend310", "export", "parity", "throughput", "accuracy", "train"} <= markers
        # every document trains on Ascend 910; each suite also has one brief CPU training case
        trains = {c.device for c in cases if c.stage == "train"}
        assert {"cpu", "ascend910"} <= trains
        cpu = [c for c in cases if c.stage == "throughput" and c.target.runner == "onnxruntime" and c.device == "cpu"]
        # the documents' batch sizes
        assert [c.batch_size for c in cpu] == [1, 4, 8, 16, 32, 64]


def test_shipped_accuracy_baselines_exist():
    from harness.config.baselines import load_baselines

    ids = {b.id for b in load_baselines(REPO / "baselines.yaml").baselines}
    for p in find_suites([REPO / "suites"]):
        s = read_suite(p)
        wanted = set(s.accuracy_baselines) | {i for t in s.targets for i in (t.accuracy_baselines or [])}
        assert wanted and wanted <= ids, wanted - ids


@pytest.mark.parametrize("body, needle", [
    ("model: m\nsource: {kind: mindcv, arch: xception}\ntargets: []\nextra: 1\n", "extra: unknown key"),
    ("model: m\nsource: {kind: mindcv}\ntargets: []\n", "source: Value error, source.kind 'mindcv' needs"),
    ("model: m\nsource: {kind: mindcv, arch: x}\ntargets:\n  - {device: tpu, runner: onnxruntime, format: onnx}\n",
     "targets.0.device"),
    ("model: m\nsource: {kind: mindcv, arch: x}\ntargets:\n  - {device: cpu, runner: onnxruntime, format: onnx,"
     " batch_sizes: [0]}\n", "batch_sizes"),
    ("- just\n- a list\n", "must be a YAML mapping"),
    ("schema_version: 7\nmodel: m\n", "schema_version 7 is not supported"),
])
def test_malformed_suite_names_file_and_key(tmp_path, body, needle):
    f = write(tmp_path / "suite.yaml", body)
    with pytest.raises(UserError) as e:
        load_suite(f)
    assert str(f) in str(e.value) and needle in str(e.value)


# `npu-smi info` table rows, hand-written in the layouts npu-smi prints (a
# published 310P3 sample is tests/fixtures/ascend/published_npu_smi_info_310p3_*.txt,
# cited in that folder's README); the numbers are chosen by hand.
NPU_SMI_310P = """\
+--------------------------------------------------------------------------------------------------------+
| npu-smi 23.0.rc2                                 Version: 23.0.rc2                                     |
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Name                  | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |
| Chip    Device                | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |
+===============================+=================+======================================================+
| 0       310P3                 | OK              | NA           45                0     / 0             |
| 0       0                     | 0000:01:00.0    | 0            1782 / 21527                            |
+===============================+=================+======================================================+
"""
NPU_SMI_910 = "| 0     910B                | OK            | 68.2        36                0    / 0             |\n"


def test_npu_smi_chip_names():
    assert parse_npu_smi_chips(NPU_SMI_310P) == ["310P3"]
    assert [family_of_chip(c) for c in parse_npu_smi_chips(NPU_SMI_910)] == ["ascend910"]
    assert family_of_chip("310") == "ascend310"
    assert family_of_chip("310B1") is None  # Atlas 200I: not a family this harness knows


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, capture_output=True, text=True)


def test_cli_validate_shipped_suites():
    p = _cli("validate")
    assert p.returncode == 0, p.stderr
    assert "suites/se_resnext50/suite.yaml: se_resnext50" in p.stdout
    assert "baselines.yaml:" in p.stdout


def test_cli_bad_suite_exit_code_and_no_traceback(tmp_path):
    write(tmp_path / "suites" / "m" / "suite.yaml", "model: m\nsource: {kind: mindcv, arch: xception}\n"
          "export: [onnx]\ntargets:\n  - {device: cpu, runner: onnxruntim, format: onnx}\n")
    p = _cli("validate", str(tmp_path / "suites"), cwd=tmp_path)
    assert p.returncode == 3
    assert "unknown runner 'onnxruntim'. Did you mean onnxruntime?" in p.stderr
    assert str(tmp_path / "suites" / "m" / "suite.yaml") in p.stderr
    assert "Traceback" not in p.stderr


def test_cli_unknown_model_name(tmp_path):
    write(tmp_path / "suites" / "m" / "suite.yaml", "model: m\nsource: {kind: mindcv, arch: se_resnext50}\n"
          "targets:\n  - {device: cpu, runner: onnxruntime, format: onnx}\n")
    p = _cli("validate", str(tmp_path / "suites"), cwd=tmp_path)
    assert p.returncode == 3
    assert "unknown source.arch 'se_resnext50'; did you mean seresnext50_32x4d" in p.stderr


def test_cli_run_with_nothing_selected_is_an_error(tmp_path):
    p = _cli("run", str(REPO / "suites" / "xception"), "-m", "ascend310 and train", "--store",
             str(tmp_path / "r.sqlite"))
    assert p.returncode == ExitCode.NOTHING_SELECTED
    assert "no case selected" in p.stdout + p.stderr
