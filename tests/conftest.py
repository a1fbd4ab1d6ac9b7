"""Fixtures shared by the harness's own tests: tiny models and data made on the spot."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def color_classifier(path: Path, *, permute: bool = False, batch: int | str = "N") -> Path:
    """An ONNX graph whose answers are known: logits = per-channel mean of the
    input, so the predicted class is the image's dominant colour (0 R, 1 G, 2 B).
    With permute=True it answers (dominant + 1) % 3: always wrong."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"], axis=1)]
    inits = []
    if permute:
        # class (c + 1) % 3 gets channel c's mean
        w = np.zeros((3, 3), np.float32)
        for c in range(3):
            w[c, (c + 1) % 3] = 1.0
        inits.append(helper.make_tensor("perm", TensorProto.FLOAT, [3, 3], w.flatten().tolist()))
        nodes.append(helper.make_node("MatMul", ["flat", "perm"], ["class"]))
    else:
        nodes.append(helper.make_node("Identity", ["flat"], ["class"]))
    graph = helper.make_graph(
        nodes, "color_classifier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, "H", "W"])],
        [helper.make_tensor_value_info("class", TensorProto.FLOAT, [batch, 3])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def color_images(root: Path, per_class: int = 4, seed: int = 0) -> Path:
    """Class folders 0_red/, 1_green/, 2_blue/ (sorted order = channel index) of generated
    PNGs whose dominant colour is the class's."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, channel in (("0_red", 0), ("1_green", 1), ("2_blue", 2)):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = rng.integers(40, 90, size=2)
            img = rng.integers(0, 90, size=(h, w, 3))
            img[..., channel] = rng.integers(170, 256, size=(h, w))
            Image.fromarray(img.astype(np.uint8)).save(d / f"img_{i}.png")
    return root


def toy_top1_baselines(path: Path, value: float, tolerance_abs: float, *, weights: str = "toy",
                       preprocessing: str = "imagenet_resize256_crop224@32") -> Path:
    """A baselines file with one top-1 figure, `toy.top1`, for the colour
    classifier (its weights and preprocessing named, as accuracy verdicts need)."""
    return write(path, f"""\
        schema_version: 1
        baselines:
          - id: toy.top1
            model: se_resnext50
            metric: top1
            value: {value}
            unit: "%"
            device: cpu
            weights: {weights}
            preprocessing: {preprocessing}
            tolerance: {{abs: {tolerance_abs}}}
            source: {{document: test-fixture, section: toy}}
        claims: []
        """)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def run_pytest(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 600):
    """Run pytest with the harness plugin in a subprocess, as a user would."""
    e = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    e.pop("PYTEST_ADDOPTS", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "harness.plugin", "-p", "no:cacheprovider",
                           "-rs", *args], cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def tmp_store(tmp_path):
    return tmp_path / "results.sqlite"


# -- results stores on both back ends -----------------------------------------
@pytest.fixture(scope="session")
def pg_server():
    """A throwaway PostgreSQL server (tests/pg_server.py). Skips only where the
    server binaries are missing, and never in CI (CI=true): there it fails."""
    from tests.pg_server import PASSWORD, PgServer, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None:
        why = ("PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin or on PATH; "
               "install Debian's `postgresql` package")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI: {why}")
        pytest.skip(why)
    server = PgServer(bin_dir).start()
    old = os.environ.get("PGPASSWORD")
    os.environ["PGPASSWORD"] = PASSWORD  # as a team would pass it: never in the URL
    try:
        yield server
    finally:
        if old is None:
            os.environ.pop("PGPASSWORD", None)
        else:
            os.environ["PGPASSWORD"] = old
        server.destroy()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_spec(request, tmp_path) -> str:
    """A new, empty results store: an SQLite path, or a fresh PostgreSQL database's URL."""
    if request.param == "sqlite":
        return str(tmp_path / "results.sqlite")
    return request.getfixturevalue("pg_server").create_database()


# -- in CI, a test skipped for a missing package or tool is a failure ------------------------
# Outside CI (a laptop with fewer extras, no chromium, no PostgreSQL) such tests skip with the
# reason; CI installs everything the tests need, so there the same skip means CI lost a piece.
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
_MISSING = ("could not import", "not installed", "not found")
_missing_skips: list[str] = []


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def _note_missing(report) -> None:
    if IN_CI and report.skipped and any(m in _skip_reason(report).lower() for m in _MISSING):
        _missing_skips.append(f"{report.nodeid}: {_skip_reason(report)}")


def pytest_collectreport(report):
    _note_missing(report)


def pytest_runtest_logreport(report):
    _note_missing(report)


def pytest_sessionfinish(session, exitstatus):
    if _missing_skips:
        print(f"\nCI: {len(_missing_skips)} test(s) skipped for a missing package or tool "
              "(.ci/run must install it):", file=sys.stderr)
        for line in _missing_skips:
            print(f"  {line}", file=sys.stderr)
        session.exitstatus = 1
