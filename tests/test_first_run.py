"""The README's first command as a newcomer meets it (issue 21): CI reads it
from README.md and runs it in a fresh venv (benchmarks/main_job.py), and an
install without an extra skips the cases that need it, naming the extra."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import main_job  # noqa: E402


def test_readme_opens_with_the_main_job_and_the_test_command():
    first, second = main_job.readme_commands()[:2]
    assert "pip install" in first and "&&" in first
    assert main_job.run_part(first).startswith("harness run suites -m cpu")
    assert main_job.report_path(first) == "report.html"
    assert "pytest tests" in second


def test_ci_runs_the_first_command_from_the_readme_in_a_fresh_venv():
    ci = (REPO / ".ci" / "run").read_text()
    main_at = ci.index("benchmarks/main_job.py --fresh-venv")
    assert main_at < ci.index("python3 -m pytest tests"), "the main job runs before the test command"
    assert "exit 1" in ci[main_at:ci.index("\n", ci.index("||", main_at))], "a failed main job fails CI"


def test_problems_name_the_case_and_what_is_missing(tmp_path):
    report = tmp_path / "report.html"
    res = {"rc": 3, "records": [
        {"event": "case", "nodeid": "suites/x/suite.yaml::train[cpu-torch-tiny-bs4]", "outcome": "failed",
         "reason": "No module named 'timm'"},
        {"event": "case", "nodeid": "suites/x/suite.yaml::accuracy[cpu-onnxruntime-bs1]", "outcome": "skipped",
         "reason": ""},
        {"event": "case", "nodeid": "suites/x/suite.yaml::throughput[cpu-onnxruntime-bs1]", "outcome": "passed"}]}
    found = main_job.problems(res, report)
    assert any("exited 3" in p for p in found)
    assert any("train[cpu-torch-tiny-bs4]" in p and "timm" in p for p in found)
    assert any("accuracy[cpu-onnxruntime-bs1]" in p and "without a reason" in p for p in found)
    assert any("report" in p for p in found)
    report.write_text("<html></html>")
    ok = {"rc": 0, "records": [res["records"][2]]}
    assert main_job.problems(ok, report) == []


def test_stage_split_reads_the_case_name():
    assert main_job.stage_of("suites/xception/suite.yaml::throughput[cpu-onnxruntime-bs16]") == (
        "throughput", "cpu-onnxruntime")
    assert main_job.stage_of("suites/xception/suite.yaml::export[onnx]") == ("export", "onnx")


HIDE = textwrap.dedent("""
    import importlib.abc, sys
    class _Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"torch", "timm", "torchvision"}:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    sys.meta_path.insert(0, _Hide())
""")


def test_a_torch_case_without_torch_skips_naming_the_extra(tmp_path):
    """An install without the torch extra (the README's main job): the PyTorch
    training case is skipped with the install that brings it, exit 0."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE)
    suite = tmp_path / "suites" / "xception"
    suite.mkdir(parents=True)
    suite.joinpath("suite.yaml").write_text((REPO / "suites" / "xception" / "suite.yaml").read_text())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hide), str(REPO)]), "COLUMNS": "400"}
    env.pop("CI", None)
    proc = subprocess.run([sys.executable, "-m", "harness", "run", str(tmp_path / "suites"), "-m", "cpu and train",
                           "--store", str(tmp_path / "s.sqlite"), "--cache", str(tmp_path / "cache")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "pip install -e '.[torch]'" in out, out
    assert "Traceback" not in out and "ModuleNotFoundError" not in out, out
