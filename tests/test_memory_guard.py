"""The memory guard knows activations for every source: a mindcv network's are read
from its batch-1 ONNX export's shapes. A batch that cannot fit is refused before
export and before timing (exit INPUT, naming the largest batch that fits), the
other batches of the sweep still run, and no empty cache folder is left."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.errors import ExitCode
from harness.metrics import memory
from tests.conftest import REPO, write

SUITE = """\
    schema_version: 1
    model: efficientnet_b0
    source: {{kind: mindcv, arch: efficientnet_b0, num_classes: 1000, checkpoint: null}}
    input: {{size: 224, preprocess: imagenet_resize256_crop224}}
    export: [onnx]
    timing: {{warmup: 1, min_iterations: 2, min_duration_s: 0}}
    targets:
      - {{name: cpu-ort, device: cpu, runner: onnxruntime, format: onnx, batch_sizes: {sizes}, stages: [throughput]}}
    """
# this host, as one with less free memory than a batch of 4096 needs (only for the guard's reading)
LOW_MEMORY = """
import os
from harness.metrics import memory
if os.environ.get("AVAILABLE"):
    memory.available_bytes = lambda: int(os.environ["AVAILABLE"])
"""


def test_largest_fitting_batch_is_named():
    est = memory.estimate(100, (3, 224, 224), 1000, per_sample_activations=4_816_896)
    per_sample = 3 * 224 * 224 * 4 + 4000 + 4_816_896
    assert memory.largest_fitting(est, 10 * per_sample + 5) == 10
    with pytest.raises(Exception, match="the largest batch that fits is 10"):
        memory.check_fits(est, where="s", available=10 * per_sample + 5)
    with pytest.raises(Exception, match="not even batch 1 fits"):
        memory.check_fits(est, where="s", available=per_sample - 1)


def _harness(args, cwd, env=None):
    e = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    e.pop("PYTEST_ADDOPTS", None)
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, env=e, capture_output=True, text=True,
                          timeout=900)


def _cache_dirs_all_hold_a_model(cache: Path) -> None:
    for d in cache.iterdir():
        if d.is_dir() and d.name not in ("peak", "om", "prep"):
            assert any(d.glob("model.*")), f"empty cache folder left: {d}"


@pytest.mark.slow
def test_efficientnet_b0_batches_that_cannot_fit(tmp_path):
    pytest.importorskip("mindcv", reason="the mindcv efficientnet_b0 needs mindcv (and MindSpore)")
    write(tmp_path / "suites" / "e" / "suite.yaml", textwrap.dedent(SUITE.format(sizes="[1, 100000]")))
    (tmp_path / "conftest.py").write_text(LOW_MEMORY)
    store, cache = tmp_path / "r.sqlite", tmp_path / "cache"
    # 1. the export: batch 100000's input alone (60 GB) cannot fit; batch 1 is still exported
    p = _harness(["run", "suites", "-m", "export", "--store", str(store), "--cache", str(cache)], tmp_path)
    out = p.stdout + p.stderr
    assert p.returncode == ExitCode.INPUT and "Traceback" not in out and "MemoryError" not in out, out
    assert "export at batch 100000 cannot fit in memory" in out and "the largest batch that fits is" in out, out
    assert "exported 1" in out, out
    _cache_dirs_all_hold_a_model(cache)
    # 2. throughput on a host with 8 GiB free: 4096 needs its activations too (read from the graph)
    write(tmp_path / "suites" / "e" / "suite.yaml", textwrap.dedent(SUITE.format(sizes="[1, 4096, 100000]")))
    p = _harness(["run", "suites", "-m", "throughput", "--store", str(store), "--cache", str(cache)], tmp_path,
                 env={"AVAILABLE": str(8 * 2**30)})
    out = p.stdout + p.stderr
    assert p.returncode == ExitCode.INPUT and "Traceback" not in out, out
    assert "batch 4096 cannot fit in memory" in out and "largest intermediate tensor" in out, out
    db = sqlite3.connect(store)
    recs = {json.loads(r)["batch_size"]: json.loads(r) for (r,) in db.execute(
        "SELECT record FROM results WHERE stage = 'throughput'")}
    assert recs[1]["status"] == "passed"  # the sweep went on
    for b in (4096, 100000):
        assert recs[b]["status"] == "error" and "the largest batch that fits is" in recs[b]["reason"]
    _cache_dirs_all_hold_a_model(cache)
