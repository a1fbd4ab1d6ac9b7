"""The architecture stays as docs/architecture.md draws it.

- `lint-imports` keeps the layer contract and the no-cycles contract in
  pyproject.toml (and each contract can fail: a test breaks a copy of the tree);
- device family names are spelled out in harness/vocab.py alone;
- a new stage and a new runner plug in without editing the harness.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.vocab import DEVICE_NAMES

REPO = Path(__file__).resolve().parents[1]
LINT = shutil.which("lint-imports")
needs_linter = pytest.mark.skipif(LINT is None, reason="import-linter not installed (pip install -e '.[dev]')")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([LINT, "--config", str(root / "pyproject.toml")], cwd=root, capture_output=True,
                          text=True, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, timeout=300)


@needs_linter
def test_import_contracts_hold():
    p = _lint(REPO)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "2 kept, 0 broken" in p.stdout


@needs_linter
@pytest.mark.parametrize("module, line, contract", [
    # a lower layer importing a higher one
    ("harness/metrics/parity.py", "import harness.analysis.claims", "Layers follow the flow"),
    # two modules of one package importing each other
    ("harness/models/cards.py", "import harness.models.provider", "No import cycles"),
])
def test_each_contract_can_fail(tmp_path, module, line, contract):
    tree = tmp_path / "tree"
    shutil.copytree(REPO / "harness", tree / "harness")
    shutil.copy(REPO / "pyproject.toml", tree / "pyproject.toml")
    target = tree / module
    target.write_text(target.read_text() + f"\n{line}  # injected by the test\n")
    p = _lint(tree)
    assert p.returncode != 0
    assert f"{contract}" in p.stdout and "BROKEN" in p.stdout


def _string_constants(path: Path):
    """String literals in code, docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


# The same words meaning something else: other tools' vocabulary, not our device families.
NOT_A_FAMILY = {
    ("harness/models/weights.py", "cpu"),  # torch.load(map_location="cpu")
    ("harness/results/interchange.py", "cpu"),  # pytest-benchmark's machine_info["cpu"]
    ("harness/runners/devices.py", "gpu"),  # MindSpore's backend plugin file names
    ("harness/metrics/interference.py", "cpu"),  # the "cpu" lines of /proc/stat
}


def test_device_families_are_spelled_out_in_the_vocabulary_only():
    offenders = []
    for path in sorted((REPO / "harness").rglob("*.py")):
        rel = str(path.relative_to(REPO))
        if path.name == "vocab.py":
            continue
        for lineno, value in _string_constants(path):
            if value in DEVICE_NAMES and (rel, value) not in NOT_A_FAMILY:
                offenders.append(f"{rel}:{lineno}: {value!r}")
    assert not offenders, "device family names outside harness/vocab.py:\n" + "\n".join(offenders)


def test_largest_module_stays_small():
    sizes = {p.relative_to(REPO): len(p.read_text().splitlines()) for p in (REPO / "harness").rglob("*.py")}
    big = {str(p): n for p, n in sizes.items() if n > 420}
    assert not big, f"modules over ~400 lines: {big}"


PLUGIN_CONFTEST = '''
import numpy as np
from pydantic import BaseModel

from harness.runners.base import Runner
from harness.stages import Stage, register_stage


class EchoRunner(Runner):
    """Answers with the input's channel means: a runner added by a conftest, no harness edit."""
    name = "echo"
    formats = ("onnx",)
    devices = ("cpu",)

    def load(self, artifact, input_shape):
        self.n = input_shape[0]

    def run(self, batch):
        return batch.mean(axis=(2, 3))

    def version(self):
        return "echo-1"


class SmokeOptions(BaseModel):
    repeats: int = 1


@register_stage
class SmokeStage(Stage):
    """A stage added by a conftest: one module and its schema section."""
    name = "smoke"
    marker_help = "runs the model a few times and checks its outputs are finite"
    schema = SmokeOptions

    def run(self, case, ctx, res):
        x = ctx.inputs(case.suite, case.batch_size)
        opts = case.suite.stage_config.get("smoke", SmokeOptions())
        with ctx.runner(case, res, ctx.target_artifact(case, res)) as runner:
            outs = [runner.run(x) for _ in range(opts.repeats)]
        res.metrics["finite"] = bool(all(np.isfinite(o).all() for o in outs))
        res.metrics["repeats"] = opts.repeats
        res.reason = f"{opts.repeats} runs"


def pytest_harness_runner_classes():
    return [EchoRunner]


def pytest_harness_env_extra(config):
    return {"rack": "B7"}
'''


def test_a_stage_and_a_runner_plug_in_from_outside(tmp_path):
    from tests.conftest import color_classifier, run_pytest, write

    (tmp_path / "conftest.py").write_text(PLUGIN_CONFTEST)
    (tmp_path / "suites" / "toy").mkdir(parents=True)
    color_classifier(tmp_path / "suites" / "toy" / "m.onnx")
    write(tmp_path / "suites" / "toy" / "suite.yaml", """\
        model: toy
        source: {kind: onnx, path: m.onnx, num_classes: 3}
        input: {size: 8, preprocess: imagenet_resize256_crop224}
        smoke: {repeats: 3}
        targets:
          - {name: echo, device: cpu, runner: echo, format: onnx, batch_sizes: [2], stages: [smoke]}
        """)
    store = tmp_path / "r.sqlite"
    p = run_pytest(["suites", "-m", "smoke", "--harness-store", str(store)], cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "1 passed" in p.stdout
    import json
    import sqlite3

    db = sqlite3.connect(store)
    (rec,) = [json.loads(r[0]) for r in db.execute("SELECT record FROM results")]
    assert rec["case"] == "smoke[echo-bs2]" and rec["metrics"] == {
        "device_model": rec["metrics"]["device_model"], "finite": True, "repeats": 3,
        "case_s": rec["metrics"]["case_s"]}  # every result records its wall time (the run's ETA)
    assert rec["runner_version"] == "echo-1"
    (env,) = [json.loads(r[0]) for r in db.execute("SELECT env FROM runs")]
    assert env["extra"] == {"rack": "B7"}
    # its schema section is checked like the rest of the suite
    write(tmp_path / "suites" / "toy" / "suite.yaml",
          (tmp_path / "suites" / "toy" / "suite.yaml").read_text().replace("repeats: 3", "repeat: 3"))
    p = run_pytest(["suites", "-m", "smoke", "--harness-store", str(store)], cwd=tmp_path)
    assert p.returncode != 0 and "smoke.repeat: unknown key" in p.stdout, p.stdout[-2000:]
