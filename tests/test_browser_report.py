"""The HTML report in a real headless browser (Debian's chromium), at full scale:
3 models x 5 devices x 6 batch sizes x 30 runs.

The page carries a Content-Security-Policy that forbids every fetch and
script, so anything it tried to load would show up as a console error here.
The screenshot is kept next to the test's temporary files (and copied to
$HARNESS_SCREENSHOT_DIR when set, for CI artifacts).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from report_fixtures import make_history_store

from harness.reports import write_report

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# where chromium is missing this skips; in CI (CI=true) tests/conftest.py turns the skip into a failure
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian: apt-get install chromium; "
                                                          ".ci/run installs it)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]
CONSOLE = re.compile(r":(INFO|WARNING|ERROR):CONSOLE[^\]]*\] (.*)")


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=120)


def _console(proc) -> list[str]:
    return [m.group(2) for m in CONSOLE.finditer(proc.stderr)]


def test_console_check_catches_a_fetch(tmp_path):
    """The detector itself: a page that tries to fetch under the same policy is caught."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" '
                    "content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\"></head>"
                    '<body><img src="http://example.invalid/x.png"></body></html>')
    proc = _chromium(tmp_path, "--enable-logging=stderr", "--v=0", f"--screenshot={tmp_path / 'bad.png'}",
                     page.as_uri())
    assert any("Content Security Policy" in line for line in _console(proc)), proc.stderr[-2000:]


def test_full_scale_report_renders_in_chromium(tmp_path):
    store = make_history_store(tmp_path / "history.sqlite", runs=30, interrupted=(7,), slow_last=1.2)
    t0 = time.perf_counter()
    out = write_report(store, tmp_path / "report.html", baselines=REPO / "baselines.yaml")
    render_s = time.perf_counter() - t0
    size = out.stat().st_size
    print(f"report 3x5x6x30: rendered in {render_s:.1f} s, {size / 1e6:.2f} MB")
    assert render_s < 60 and size < 5e6

    shot = tmp_path / "report.png"
    proc = _chromium(tmp_path, "--enable-logging=stderr", "--v=0", "--window-size=1280,4000",
                     f"--screenshot={shot}", out.as_uri())
    assert shot.is_file() and shot.stat().st_size > 10_000, proc.stderr[-2000:]
    assert _console(proc) == [], _console(proc)
    if os.environ.get("HARNESS_SCREENSHOT_DIR"):
        dest = Path(os.environ["HARNESS_SCREENSHOT_DIR"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, dest / shot.name)

    dom = _chromium(tmp_path, "--dump-dom", out.as_uri()).stdout
    for model in ("se_resnext50", "xception", "efficientnet_b0"):
        assert f'<h2 id="{model}">' in dom
    for section in ('class="gates"', 'class="ratios"', 'class="history"', 'class="latency-chart"',
                    "Throughput (images/s) by batch size", "Parity (export vs framework)", "Accuracy",
                    'id="environment"', 'class="chart"'):
        assert section in dom, section
    assert dom.count('class="spark"') == 3 * (5 * 6 * 2 + 2)  # per model: 30 cases x 2 metrics + top1/top5
    assert "history (regressions)" in dom and "significant regression" in dom
